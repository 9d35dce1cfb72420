"""`python -m jaxseg.weights ...` (see jaxseg.weights)."""
import sys

from jaxseg.weights import main

main(sys.argv[1:])

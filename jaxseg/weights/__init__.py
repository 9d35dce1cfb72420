"""Weight files: export a run's parameters, list a file's arrays, convert torchvision's.

  python -m jaxseg.weights export --workdir runs/x --out backbone.npz [--prefix backbone]
  python -m jaxseg.weights list backbone.npz        (or a run's workdir)
  python -m jaxseg.weights torchvision ARCH --pth FILE.pth --out FILE.npz

`export` writes the params and batch statistics of a run's latest checkpoint (or
`--step`) as `.npz` or `.safetensors` (by the extension of --out), named by their full
flax paths with the collection first (`params/backbone/.../Conv_0/kernel`,
`batch_stats/.../BatchNorm_0/mean`); `--prefix` keeps only the arrays under that path
(names stay full, so `init_from.source_prefix` means the same for the file and the
run). A new run loads such a file with `--config.init_from.weights=FILE`
(docs/transfer.md). `torchvision` converts a torchvision state dict (ARCH one of
`jaxseg.weights.torchvision.CONVERTERS`, e.g. fasterrcnn_resnet50_fpn) into such a file;
every mapping is in `jaxseg/weights/torchvision.py`. User errors print one line and exit
with status 2.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from jaxseg import cli
from jaxseg.errors import ConfigError, JaxsegError


def export(workdir: str, out: str, prefix: str = "", step: int | None = None) -> dict:
  """Write the run's checkpoint arrays under `prefix` to `out`; returns what was written."""
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  arrays, step = transfer.read_checkpoint(workdir, step, label="--workdir")
  prefix = prefix.strip("/")
  selected = {name: value for name, value in arrays.items()
              if transfer.is_under(name.partition("/")[2], prefix)}
  if not selected:
    some = ", ".join(transfer.params_first(arrays)[:3])
    raise ConfigError(f"--prefix={prefix!r} selects none of the {len(arrays)} arrays of "
                      f"{workdir} (step {step}), e.g. {some}; expected a path after the "
                      f"collection")
  transfer.write_weights(out, selected)
  return selected


def list_arrays(path: str) -> list[str]:
  """One line per array: name, shape, dtype; then a total."""
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  arrays, source = transfer.read_arrays(path)
  width = max((len(name) for name in arrays), default=0)
  lines = [f"{name:<{width}}  {str(tuple(value.shape)):<18} {value.dtype}"
           for name, value in sorted(arrays.items())]
  total = sum(int(np.prod(value.shape)) for value in arrays.values())
  lines.append(f"# {len(arrays)} arrays, {total:,} values in {source}")
  return lines


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m jaxseg.weights", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  p = commands.add_parser("export", help="write a run's checkpoint as .npz/.safetensors")
  p.add_argument("--workdir", required=True, help="a run's workdir or checkpoints/ dir")
  p.add_argument("--out", required=True, help="FILE.npz or FILE.safetensors")
  p.add_argument("--prefix", default="", help="only the arrays under this path, e.g. backbone")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p = commands.add_parser("list", help="print name, shape and dtype of each array")
  p.add_argument("path", help="a .npz / .safetensors file or a run's workdir")
  p = commands.add_parser("torchvision", help="convert a torchvision .pth state dict")
  p.add_argument("arch", help="e.g. fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn, "
                 "keypointrcnn_resnet50_fpn, resnet50")
  p.add_argument("--pth", required=True, help="the torchvision state dict file")
  p.add_argument("--out", required=True, help="FILE.npz or FILE.safetensors")
  args = parser.parse_args(argv)
  try:
    if args.command == "export":
      arrays = export(args.workdir, args.out, args.prefix, args.step)
      print(f"wrote {len(arrays)} arrays to {args.out}")
    elif args.command == "torchvision":
      from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
      from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
      arrays = tvw.convert_file(args.arch, args.pth)
      transfer.write_weights(args.out, arrays)
      print(f"wrote {len(arrays)} arrays of {args.arch} to {args.out}")
    else:
      print("\n".join(list_arrays(args.path)))
  except JaxsegError as e:
    cli.fail(str(e))


if __name__ == "__main__":
  main(sys.argv[1:])

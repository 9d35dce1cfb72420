"""Accumulable statistics (sums over batches and devices) and their summaries."""

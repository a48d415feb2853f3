"""Cheaper model variants: quantization, pruning and distillation, with measured reports."""

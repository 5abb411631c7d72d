"""Rea2Seg benchmarks: ``python -m bench`` (ratios measured side by side on CPU-size random-weight models) and
``python bench/gpu_profile.py`` (full-size architectures on a CUDA device). See bench/README.md."""

"""Training: fine-tuning a VLM scorer on mask-scoring data (``rea2seg train-scorer``)."""

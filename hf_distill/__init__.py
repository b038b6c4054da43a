"""hf_distill: distil large ranking teachers into small students with the Hugging Face Trainer."""

__version__ = "0.1.0"

"""vtp_bench: video-text pre-training methods on one shared ground (encoders, data, metrics, training)."""

__version__ = "0.1.0"

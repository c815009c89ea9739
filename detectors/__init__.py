"""railwatch detectors: text in, findings out."""

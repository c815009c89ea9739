"""railwatch exporters: finished trace records out to storage and telemetry."""

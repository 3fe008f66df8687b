"""Observability: pipeline_metrics, OpenTelemetry metrics, Prometheus, health."""

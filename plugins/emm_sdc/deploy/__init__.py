"""Deployment as code generated from the ITF YAMLs (docs/aws_batch.md)."""

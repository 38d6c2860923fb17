"""The pure monitoring core: no Kafka, no network, no clock. Bytes or dicts in, alerts out."""

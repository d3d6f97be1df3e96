"""The event pipeline: prediction events to files, the shipper to Elasticsearch, its index setup."""

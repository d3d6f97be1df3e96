"""The serving hot path: metrics, bins, reference, outcomes and their stores, the HTTP routes and the multiprocess exposition."""

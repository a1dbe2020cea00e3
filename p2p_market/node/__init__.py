"""The node runtime: the imperative shell around the core (storage, sync, direct
delivery, control API, metrics), all services in one trio nursery."""

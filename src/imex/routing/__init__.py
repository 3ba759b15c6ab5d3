"""Routing: stability, destinations, the durable delivery queue and its workers."""

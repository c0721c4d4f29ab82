"""Sandbox egress on a node: policy enforcement, the sandboxes' resolver, the egress proxy."""

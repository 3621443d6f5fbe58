"""Reconcile logic: no kopf decorators, no HTTP (the kube client does that)."""

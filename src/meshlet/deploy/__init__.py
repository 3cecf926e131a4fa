"""Manifests and, in later issues, the reconciler, rollouts and autoscaling."""

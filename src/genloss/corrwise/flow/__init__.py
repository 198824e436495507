"""Optical flow estimators behind one interface (see base.py)."""
from .base import FlowEstimator, get_flow, list_flows, register_flow

__all__ = ["FlowEstimator", "get_flow", "list_flows", "register_flow"]

"""Helpers of the scale-out pipeline's step commands (scripts/get-available-ip.py, scripts/autoscale_step.py).

They run on a Jenkins agent: no Django here, only the standard library, plus integrations/ for vCenter and F5.
"""

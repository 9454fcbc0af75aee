"""What the config services announce to the apps above them, so that autoscaling/ never imports them.

`config_saved` is sent inside the transaction that saved a config (keyword arguments `config` and `user`); a
receiver writes in that same transaction (the fleet adopts the config's monitored instances) and does no I/O.
"""

from django.dispatch import Signal

config_saved = Signal()

class IntegrationError(Exception):
    """A call to an external system failed.

    `message` is written for an operator (what failed and, where known, what to do); `permanent` is true when
    retrying the same call cannot help (bad input, not found, refused credentials) and false for outages and
    time-outs. `system` names the external system ("vcenter", "ssh", "jenkins", ...).
    """

    def __init__(self, message, *, system, permanent=False, code=None):
        super().__init__(message)
        self.message = message
        self.system = system
        self.permanent = permanent
        self.code = code

    def __str__(self):
        return self.message

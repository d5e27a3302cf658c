class ServiceError(Exception):
    """A business rule refused the action. The message is shown to the user as is."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class PermissionDenied(ServiceError):
    """The actor may not do this. Views turn it into a 404 (never confirm the object exists)."""

    def __init__(self, message: str = "You do not have access to this."):
        super().__init__(message)

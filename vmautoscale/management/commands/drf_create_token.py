from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from knox.models import AuthToken


class Command(BaseCommand):
    """The command DRF's authtoken app had, for knox's hashed tokens: the key is printed once and kept only as a
    hash, so a lost key cannot be shown again (make a new one)."""

    help = "Create an API token for a user and print it once (the portal keeps only its hash)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "-r", "--reset", action="store_true", help="Delete the user's other API tokens first (they stop working)."
        )

    def handle(self, *args, username, reset, **options):
        users = get_user_model()
        try:
            user = users._default_manager.get_by_natural_key(username)
        except users.DoesNotExist:
            raise CommandError(f"Cannot create the token: user {username!r} does not exist.") from None
        with transaction.atomic():
            if reset:
                AuthToken.objects.filter(user=user).delete()
            _, key = AuthToken.objects.create(user=user)
        self.stdout.write(f"Generated token {key} for user {username}")

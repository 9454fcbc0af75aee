import secrets

from django.contrib.auth import get_user_model

from access.commands import AuditedCommand


class Command(AuditedCommand):
    help = (
        "Create the first admin user. Uses DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD when set; "
        "otherwise generates a password and prints it once. Does nothing when a superuser exists."
    )

    def handle(self, *args, **options):
        import os

        users = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if users.objects.filter(is_superuser=True).exists():
            if password and not users.objects.filter(username=username).exists():
                users.objects.create_superuser(username=username, password=password, email="")
                self.stdout.write(f"Admin user {username!r} created from DJANGO_SUPERUSER_* variables.")
            return
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, password=password, email="")
        if generated:
            self.stdout.write(
                self.style.SUCCESS(f"Admin user created: {username} / {password}  (shown once; change it in /admin/)")
            )
        else:
            self.stdout.write(f"Admin user {username!r} created from DJANGO_SUPERUSER_* variables.")

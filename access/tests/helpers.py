"""Users of each role for the tests (the groups come from the migration and the post_migrate sync)."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group


def role_user(role, username=None, **fields):
    """An active staff user whose only permissions are those of `role`'s group."""
    # No password (tests log in with force_login): the production hasher is deliberately slow.
    user = get_user_model().objects.create_user(username=username or f"{role}-user", is_staff=True, **fields)
    user.groups.add(Group.objects.get(name=role))
    return user

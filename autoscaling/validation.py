"""Checks of autoscaling configs and IP pools that need no database: each returns messages per field.

The models' clean() methods call these, so the admin, the API and the services all refuse the same input with the
same field and reason.
"""

import ipaddress
import re
import string

from django.utils.translation import gettext as _

# BIG-IP object names: letters, digits, '.', '_' and '-', starting with a letter or '_'.
F5_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,62}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MAX_DURATION_SECONDS = 24 * 3600
# A scale-in waits at most this long for an F5 member's connections to end (the drain timeout).
MAX_DRAIN_TIMEOUT_SECONDS = 3600
# {n}'s format in a VM name pattern: an optional fill and alignment, zero padding, a width, the type d.
N_FORMAT_RE = re.compile(r"^(?:[^{}]?[<>=^])?0?(?P<width>\d+)?d?$")
VM_NAME_MAX_WIDTH = 8


def _add(errors, field, message):
    errors.setdefault(field, []).append(message)


def parse_network(value):
    """An IPv4 network from CIDR text, or a ValueError whose message says what is wrong."""
    try:
        network = ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError(
            _("%(value)s is not a network in CIDR notation, e.g. 10.0.10.0/24.") % {"value": value}
        ) from None
    if network.version != 4:
        raise ValueError(_("Only IPv4 networks are supported."))
    if str(network) != str(value).strip():
        raise ValueError(
            _("%(value)s has host bits set; the network is %(network)s.") % {"value": value, "network": network}
        )
    return network


def _address(value):
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    return address if address.version == 4 else None


def ipv4_address_errors(value):
    """Messages for one entry of a list of IPv4 addresses (a pool's DNS servers, its excluded addresses)."""
    return [] if _address(value) is not None else [_("%(value)s is not an IPv4 address.") % {"value": value}]


def address_range(first, last):
    """All addresses from first to last, both included (empty when first > last)."""
    start, end = int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))
    return (ipaddress.IPv4Address(n) for n in range(start, end + 1))


def ip_pool_errors(*, network, first_address, last_address, gateway=None, dns_servers=(), excluded_addresses=()):
    """Field -> messages for an IP pool's addresses (empty when the pool is valid)."""
    errors = {}
    try:
        net = parse_network(network)
    except ValueError as exc:
        _add(errors, "network", str(exc))
        net = None
    first, last = _address(first_address), _address(last_address)
    if first is None:
        _add(errors, "first_address", _("Not an IPv4 address."))
    if last is None:
        _add(errors, "last_address", _("Not an IPv4 address."))
    if first is not None and last is not None and first > last:
        _add(
            errors,
            "last_address",
            _("The last address must not come before the first address %(first)s.") % {"first": first},
        )
    if net is not None:
        reserved = set()
        if net.prefixlen < 31:
            reserved = {net.network_address, net.broadcast_address}
        for field, address in (("first_address", first), ("last_address", last)):
            if address is None:
                continue
            if address not in net:
                _add(
                    errors,
                    field,
                    _("%(address)s is outside the network %(network)s.") % {"address": address, "network": net},
                )
            elif address in reserved:
                _add(
                    errors,
                    field,
                    _("%(address)s is the network or broadcast address of %(network)s.")
                    % {"address": address, "network": net},
                )
    if gateway not in (None, ""):
        gw = _address(gateway)
        if gw is None:
            _add(errors, "gateway", _("Not an IPv4 address."))
        else:
            if net is not None and gw not in net:
                _add(
                    errors,
                    "gateway",
                    _("The gateway %(gateway)s is outside the network %(network)s.") % {"gateway": gw, "network": net},
                )
            if first is not None and last is not None and first <= gw <= last:
                _add(
                    errors,
                    "gateway",
                    _("The gateway %(gateway)s lies inside the range %(first)s-%(last)s; a VM would get its address.")
                    % {"gateway": gw, "first": first, "last": last},
                )
    if not isinstance(dns_servers, list | tuple):
        _add(errors, "dns_servers", _("Give a list of IPv4 addresses."))
    else:
        for server in dns_servers:
            if _address(server) is None:
                _add(errors, "dns_servers", _("%(value)s is not an IPv4 address.") % {"value": server})
    if not isinstance(excluded_addresses, list | tuple):
        _add(errors, "excluded_addresses", _("Give a list of IPv4 addresses."))
    else:
        for value in excluded_addresses:
            address = _address(value)
            if address is None:
                _add(errors, "excluded_addresses", _("%(value)s is not an IPv4 address.") % {"value": value})
            elif first is not None and last is not None and not first <= address <= last:
                _add(
                    errors,
                    "excluded_addresses",
                    _("%(value)s is outside the range %(first)s-%(last)s.")
                    % {"value": value, "first": first, "last": last},
                )
    return errors


# --- the one definition of a pool's usable addresses: validation, IPAM, the admin and the API all count these ---
def pool_reserved_addresses(
    *, network, first_address, last_address, gateway=None, dns_servers=(), excluded_addresses=()
):
    """The addresses inside the range that are never handed out: the network and broadcast addresses, the
    gateway, the DNS servers and the excluded addresses (empty when the range is not valid)."""
    first, last = _address(first_address), _address(last_address)
    if first is None or last is None or first > last:
        return set()
    candidates = [_address(value) for value in (gateway, *(dns_servers or ()), *(excluded_addresses or ())) if value]
    try:
        net = ipaddress.ip_network(str(network).strip(), strict=False)
    except ValueError:
        net = None
    if net is not None and net.version == 4 and net.prefixlen < 31:
        candidates += [net.network_address, net.broadcast_address]
    return {address for address in candidates if address is not None and first <= address <= last}


def pool_usable_addresses(**pool):
    """The addresses IPAM hands out, lowest first (as text): the range minus `pool_reserved_addresses`."""
    first, last = _address(pool["first_address"]), _address(pool["last_address"])
    if first is None or last is None:
        return
    reserved = pool_reserved_addresses(**pool)
    for address in address_range(first, last):
        if address not in reserved:
            yield str(address)


def pool_address_usable(address, **pool):
    """Whether `address` is one of `pool_usable_addresses` (without walking the range)."""
    value, first, last = _address(address), _address(pool["first_address"]), _address(pool["last_address"])
    if value is None or first is None or last is None or not first <= value <= last:
        return False
    return value not in pool_reserved_addresses(**pool)


def pool_usable_count(**pool):
    """How many addresses `pool_usable_addresses` yields, without walking the range."""
    first, last = _address(pool["first_address"]), _address(pool["last_address"])
    if first is None or last is None or first > last:
        return 0
    return int(last) - int(first) + 1 - len(pool_reserved_addresses(**pool))


def promql_syntax_error(expression):
    """A cheap syntax check before promtool sees the expression: balanced brackets and quotes, one line of PromQL.

    Returns a message, or None. promtool still validates the rule file on the host before it is used.
    """
    text = expression.strip()
    if not text:
        return None
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    quote = None
    escaped = False
    top_level_comparison = False
    for position, char in enumerate(text, start=1):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append((char, position))
        elif char in pairs:
            if not stack or stack[-1][0] != pairs[char]:
                return _("Unexpected '%(char)s' at position %(position)d.") % {"char": char, "position": position}
            stack.pop()
        elif char in "<>=!" and not stack:
            # Outside brackets these only start ==, !=, <, <=, >, >=; label matchers live inside {}.
            top_level_comparison = True
    if quote:
        return _("A string opened with %(quote)s is never closed.") % {"quote": quote}
    if stack:
        char, position = stack[-1]
        return _("'%(char)s' at position %(position)d is never closed.") % {"char": char, "position": position}
    if top_level_comparison:
        return _("The expression contains a comparison; give only the percentage, the portal adds the threshold.")
    return None


def _target_allowed_error(item, host, networks, domains):
    """A message when a target's host is outside the allowed networks (an address) or domains (a name)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        if any(name == d or name.endswith("." + d) for d in (d.lower().strip(".") for d in domains)):
            return None
        if domains:
            return _("%(value)s: host names must end in %(domains)s; or give an IP address.") % {
                "value": item,
                "domains": ", ".join(domains),
            }
        return _("%(value)s: give an IP address; host names are not accepted here (MONITORED_DOMAINS).") % {
            "value": item
        }
    if any(address.version == network.version and address in network for network in networks):
        return None
    return _(
        "%(value)s is outside the networks Prometheus may scrape (%(networks)s); ask an administrator to add "
        "its network to MONITORED_NETWORKS."
    ) % {"value": item, "networks": ", ".join(str(network) for network in networks) or "-"}


def monitored_instance_errors(instances, *, networks=(), domains=()):
    """Messages for the list of host:port targets Prometheus scrapes for a service: each a host:port whose host is
    an IP address inside `networks` or a name under `domains` (settings MONITORED_NETWORKS, MONITORED_DOMAINS)."""
    if not isinstance(instances, list | tuple):
        return [_("Give a list of host:port strings.")]
    messages = []
    seen = set()
    for item in instances:
        if not isinstance(item, str):
            messages.append(_("%(value)r is not a host:port string.") % {"value": item})
            continue
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host:
            messages.append(_("%(value)s is not host:port (e.g. 10.0.10.21:9100).") % {"value": item})
            continue
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            valid_host = _ipv6(host)
        else:
            valid_host = _address(host) is not None or bool(HOSTNAME_RE.match(host))
        if not valid_host:
            messages.append(_("%(value)s: %(host)s is not a host name or IP address.") % {"value": item, "host": host})
        else:
            message = _target_allowed_error(item, host, networks, domains)
            if message:
                messages.append(message)
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            messages.append(_("%(value)s: the port must be a number from 1 to 65535.") % {"value": item})
        if item.strip() in seen:
            messages.append(_("%(value)s is listed twice.") % {"value": item})
        seen.add(item.strip())
    return messages


def _ipv6(text):
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _pattern_field_error(name, conversion, spec):
    """A message when one replacement field of a VM name pattern is not {service} or {n} with a small width."""
    if name not in ("service", "n") or conversion:
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        return _("%(field)s is not a placeholder of the pattern; use only {service} and {n}.") % {"field": shown}
    if not spec:
        return None
    match = N_FORMAT_RE.match(spec) if name == "n" else None
    if match is None:
        return _(
            "{%(name)s:%(spec)s} is not a format the pattern takes; {n} takes a width like {n:03d}, {service} none."
        ) % {"name": name, "spec": spec}
    if match["width"] and int(match["width"]) > VM_NAME_MAX_WIDTH:
        return _("{n:%(spec)s} is wider than %(max)d digits; e.g. {n:03d}.") % {"spec": spec, "max": VM_NAME_MAX_WIDTH}
    return None


def vm_name_pattern_error(pattern, service_name):
    """A message when the pattern cannot produce valid, distinct VM names.

    Only {service} and {n} are filled in, {n} with at most a fill, an alignment and a width of up to
    VM_NAME_MAX_WIDTH (e.g. {n:03d}): a pattern is formatted for every clone, and `{n:0>999999999999999}` would
    build a string of that size.
    """
    try:
        fields = [(name, conversion, spec) for _text, name, spec, conversion in string.Formatter().parse(pattern)]
    except ValueError as exc:
        return _("The pattern cannot be filled in (%(error)s); use only {service} and {n}.") % {"error": exc}
    for name, conversion, spec in fields:
        if name is None:
            continue
        message = _pattern_field_error(name, conversion, spec)
        if message:
            return message
    if "n" not in {name for name, _conversion, _spec in fields}:
        return _("The pattern must contain {n} (the number that keeps names distinct), e.g. {service}-{n:03d}.")
    try:
        sample = pattern.format(service=service_name or "service", n=1)
    except (KeyError, IndexError, ValueError) as exc:
        return _("The pattern cannot be filled in (%(error)s); use only {service} and {n}.") % {"error": exc}
    if not VM_NAME_RE.match(sample):
        return _("It yields %(sample)s, which is not a valid VM name (letters, digits, '.', '_' and '-').") % {
            "sample": sample
        }
    return None


def f5_name_error(value):
    if value and not F5_NAME_RE.match(value):
        return _(
            "%(value)s is not a valid BIG-IP name (letters, digits, '.', '_' and '-', starting with a letter)."
        ) % {"value": value}
    return None

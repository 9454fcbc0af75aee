"""vCenter: VM inventory, templates, clones, guest customization and power, over pyvmomi.

One choke point does the I/O: `VcenterClient._call` (and `_connect` beneath it). Every pyvmomi call runs through
it; every failure leaves it as an `IntegrationError(system="vcenter")` whose message names what failed in words an
operator understands. pyvmomi objects never leave this module: callers get the dataclasses below.

Inventory is read with the PropertyCollector (`RetrievePropertiesEx` over a traversal of the whole inventory):
one round trip for a list, whatever the number of VMs, and never a lazy attribute read (which is also the only
safe way with the lab's simulator, whose server panics on reading some unset properties).

The simulator and a real vCenter agree on what is used here; where vCenter would refuse something the simulator
accepts (two VMs with one name), the client checks first. No Django here: the pipeline's scripts use it too.
"""

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.etree import ElementTree

from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapStubAdapter
from pyVmomi.VmomiSupport import newestVersions, versionMap

from integrations.errors import IntegrationError

SYSTEM = "vcenter"
PropertyCollector = vmodl.query.PropertyCollector
FALLBACK_API_VERSION = "vim.version.version11"  # vSphere 6.5, spoken by every supported vCenter

# Faults after which the same call may well succeed later.
TRANSIENT_FAULTS = (
    vim.fault.TaskInProgress,
    vim.fault.Timedout,
    vim.fault.InsufficientResourcesFault,
    vmodl.fault.HostCommunication,
    vmodl.fault.RequestCanceled,
    vmodl.fault.SystemError,
)

POWERED_ON = "poweredOn"
POWERED_OFF = "poweredOff"
SUSPENDED = "suspended"
POWER_STATES = (POWERED_ON, POWERED_OFF, SUSPENDED)
# The ownership marker: a custom attribute (vCenter custom field) on every VM the portal clones, holding the id of
# its ManagedInstance, so the reconcile and the orphan sweep find the portal's VMs whatever their names.
OWNERSHIP_FIELD = "vmautoscale.instance"

_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# The SOAP method of a request, for `VcenterClient.calls` (pyvmomi serializes "<soapenv:Body>\n<Method xmlns=...").
_SOAP_METHOD_RE = re.compile(rb"<soapenv:Body>\s*<([A-Za-z_][A-Za-z0-9_]*)")

# What the fleet's reconcile reads of every VM, in the same single RetrievePropertiesEx as the custom field
# definitions (the key of the ownership marker). The heartbeat is the summary's: vCenter fills it for every VM.
_FACT_PROPERTIES = [
    "name",
    "config.instanceUuid",
    "config.template",
    "runtime.powerState",
    "summary.quickStats.guestHeartbeatStatus",
    "guest.ipAddress",
    "customValue",
]

# Properties read for every VM in one RetrievePropertiesEx (name and parent come with every entity). Not
# config.hardware.device: parsing every VM's device list makes a 1,000-VM list 3x slower.
_VM_PROPERTIES = [
    "config.instanceUuid",
    "config.template",
    "config.guestFullName",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "summary.storage.committed",
    "summary.storage.uncommitted",
    "runtime.powerState",
    "runtime.host",
    "guest.ipAddress",
    "guest.hostName",
    "resourcePool",
    "datastore",
    "network",
]


@dataclass(frozen=True)
class VirtualMachineInfo:
    """A VM or template as vCenter reports it. `moid` is vCenter's managed object id (e.g. "vm-42")."""

    moid: str
    name: str
    instance_uuid: str
    power_state: str  # one of POWER_STATES
    is_template: bool
    guest_os: str
    num_cpus: int | None
    memory_mb: int | None
    disk_gb: float | None  # provisioned storage (disks, swap, logs) in GiB, as vCenter's summary reports it
    ip_address: str  # "" until VMware Tools reports one
    hostname: str
    datacenter: str
    folder: str  # inventory path, e.g. "/DC0/vm/web"
    host: str
    cluster: str  # "" for a standalone host
    resource_pool: str  # inventory path; "" for a template (templates have no pool)
    datastores: tuple[str, ...] = field(default_factory=tuple)
    networks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def datastore(self):
        return self.datastores[0] if self.datastores else ""

    @property
    def powered_on(self):
        return self.power_state == POWERED_ON


@dataclass(frozen=True)
class VmFacts:
    """What the fleet's reconcile needs of one VM or template, read for all of them in one round trip.

    `guest_heartbeat` is VMware Tools' heartbeat: "green", "yellow", "red", or "gray" (Tools not running, or
    unknown). `owner` is the value of the ownership marker (`OWNERSHIP_FIELD`): the id of the portal's
    ManagedInstance, "" on a VM the portal did not mark.
    """

    moid: str
    name: str
    instance_uuid: str
    power_state: str
    guest_heartbeat: str
    ip_address: str
    owner: str
    is_template: bool = False

    @property
    def powered_on(self):
        return self.power_state == POWERED_ON


@dataclass(frozen=True)
class GuestCustomization:
    """Guest OS settings applied to a powered-off clone; vCenter applies them at the next power-on (Linux guests)."""

    hostname: str
    ip_address: str
    netmask: str
    gateway: str = ""
    dns_servers: tuple[str, ...] = ()
    domain: str = "localdomain"

    def validate(self):
        """Raise a permanent IntegrationError naming the first bad field."""
        if not _HOSTNAME_RE.match(self.hostname or ""):
            _bad("hostname", self.hostname, "use 1-63 letters, digits and hyphens, not starting or ending with one")
        addresses = {"ip_address": self.ip_address, "netmask": self.netmask}
        if self.gateway:
            addresses["gateway"] = self.gateway
        for index, server in enumerate(self.dns_servers):
            addresses[f"dns_servers[{index}]"] = server
        for name, value in addresses.items():
            try:
                ipaddress.IPv4Address(value)
            except (ipaddress.AddressValueError, ValueError):
                _bad(name, value, "not an IPv4 address")
        try:
            network = ipaddress.IPv4Network(f"{self.ip_address}/{self.netmask}", strict=False)
        except ValueError:
            _bad("netmask", self.netmask, "not a valid netmask")
        if self.gateway and ipaddress.IPv4Address(self.gateway) not in network:
            _bad("gateway", self.gateway, f"not inside {network}")


def _bad(field_name, value, reason):
    raise IntegrationError(
        f"Guest customization: {field_name}={value!r} is invalid: {reason}.",
        system=SYSTEM,
        permanent=True,
        code="invalid_customization",
    )


@dataclass
class _Entity:
    obj: object
    kind: str
    name: str
    parent: str | None
    props: dict


class VcenterClient:
    """A session with one vCenter. Use as a context manager (or call `close()`); it logs in on first use.

    `round_trips` counts every HTTP request sent to vCenter (a login costs 3: API version probe, service content,
    Login), so a caller can show that listing VMs costs one round trip whatever their number; `calls` counts the
    SOAP requests by method; `logins` counts logins.
    """

    def __init__(self, url, user, password, *, verify_tls=True, timeout=30.0):
        parts = urlsplit(url or "")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("https", "http") or not parts.hostname or port == -1:
            raise IntegrationError(
                f"vCenter URL {url!r} is not valid: it must look like https://vcenter.example.com/sdk.",
                system=SYSTEM,
                permanent=True,
                code="bad_url",
            )
        self.url = url
        self.user = user
        self._password = password
        self.verify_tls = verify_tls
        self.timeout = float(timeout)
        self._protocol = parts.scheme
        self._host = parts.hostname
        self._port = port or (443 if parts.scheme == "https" else 80)
        self._path = parts.path or "/sdk"
        self._content = None
        self._field_keys = {}  # custom field name -> key, once defined or read
        self.round_trips = 0
        self.calls = Counter()  # SOAP method name -> requests sent (e.g. calls["RetrievePropertiesEx"])
        self.logins = 0

    def __repr__(self):
        return f"<VcenterClient {self.url} user={self.user}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Log out (one request). Errors are ignored: the session dies with vCenter's idle timeout anyway."""
        if self._content is not None:
            content, self._content = self._content, None
            try:
                content.sessionManager.Logout()
            except Exception:  # noqa: S110 - logging out of a dead session must not hide the caller's error
                pass

    # --- the choke point ---------------------------------------------------------------------------------------
    def _connect(self):
        if self._content is not None:
            return self._content
        # Always pass a context: with none, pyvmomi silently skips verification for localhost addresses.
        context = ssl.create_default_context() if self.verify_tls else ssl._create_unverified_context()
        try:
            # Logging in here rather than with pyVim's SmartConnect: its API-version probe has no time-out (a hung
            # vCenter would hang the caller) and it turns network errors into an opaque HostConnectFault.
            version = self._api_version(context)
            stub = SoapStubAdapter(
                url=f"{self._protocol}://{self._host}:{self._port}{self._path}",
                version=version,
                sslContext=context,
                httpConnectionTimeout=self.timeout,
            )
            stub.requestModifierList.append(self._count_request)
            si = vim.ServiceInstance("ServiceInstance", stub)
            content = si.RetrieveContent()
            content.sessionManager.Login(self.user, self._password, None)
        except Exception as exc:
            raise self._error(exc, "log in to vCenter") from None
        self.logins += 1
        self._content = content
        return content

    def _api_version(self, context):
        """The newest vSphere API version both vCenter and pyvmomi speak (from vCenter's vimServiceVersions.xml)."""
        connection_class = http.client.HTTPSConnection if self._protocol == "https" else http.client.HTTPConnection
        kwargs = {"context": context} if self._protocol == "https" else {}
        connection = connection_class(self._host, self._port, timeout=self.timeout, **kwargs)
        try:
            connection.request("GET", f"{self._path}/vimServiceVersions.xml")
            response = connection.getresponse()
            body = response.read()
            self.round_trips += 1
        finally:
            connection.close()
        if response.status != 200:
            return FALLBACK_API_VERSION
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            return FALLBACK_API_VERSION
        for namespace in root.iter("namespace"):
            if (namespace.findtext("name") or "") != "urn:vim25":
                continue
            offered = [namespace.findtext("version") or ""]
            offered += [v.text or "" for v in namespace.iterfind("priorVersions/version")]
            for number in offered:
                if f"vim25/{number}" in versionMap:
                    return versionMap[f"vim25/{number}"]
            # vCenter is newer than this pyvmomi: speak the newest version pyvmomi knows.
            return newestVersions.GetName("vim")
        return FALLBACK_API_VERSION

    def _count_request(self, request):
        self.round_trips += 1
        body = request if isinstance(request, bytes) else str(request).encode()
        method = _SOAP_METHOD_RE.search(body)
        self.calls[method.group(1).decode() if method else "?"] += 1
        return request

    def _call(self, action, fn, *, subject=None):
        """Run fn(content) against vCenter; turn every failure into an IntegrationError about `action`."""
        content = self._connect()
        try:
            return fn(content)
        except vim.fault.NotAuthenticated:
            # The session expired (vCenter drops idle sessions): log in again once.
            self._content = None
            content = self._connect()
            try:
                return fn(content)
            except Exception as exc:
                raise self._error(exc, action, subject) from None
        except Exception as exc:
            raise self._error(exc, action, subject) from None

    def _error(self, exc, action, subject=None):
        if isinstance(exc, IntegrationError):
            return exc
        what = subject or "the object"
        where = f"vCenter at {self._host}:{self._port}"

        def error(message, code, permanent):
            return IntegrationError(f"Could not {action}: {message}", system=SYSTEM, permanent=permanent, code=code)

        if isinstance(exc, ssl.SSLCertVerificationError):
            return error(
                f"the TLS certificate of {where} is not trusted ({exc.verify_message}). Install its CA "
                "certificate on this machine, or set VCENTER_VERIFY_TLS=false only for a test system.",
                "tls_untrusted",
                True,
            )
        if isinstance(exc, socket.timeout | TimeoutError):
            return error(f"{where} did not answer within {self.timeout:g} s.", "timeout", False)
        if isinstance(exc, ssl.SSLError | OSError | http.client.HTTPException):
            return error(f"{where} is unreachable ({exc.__class__.__name__}: {exc}).", "unreachable", False)
        if isinstance(exc, vim.fault.InvalidLogin):
            return error(
                f"{where} refused the login of user {self.user!r}: check VCENTER_USER and VCENTER_PASSWORD.",
                "login_failed",
                True,
            )
        if isinstance(exc, vim.fault.NoPermission):
            return error(f"user {self.user!r} lacks the vCenter permission for this.", "no_permission", True)
        if isinstance(exc, vim.fault.InvalidPowerState):
            existing = getattr(exc, "existingState", None) or "in another power state"
            return error(f"{what} is {existing}.", "wrong_power_state", True)
        if isinstance(exc, vim.fault.DuplicateName):
            return error(f"the name {getattr(exc, 'name', '')!r} is already taken in vCenter.", "name_taken", True)
        if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
            return error(f"{what} no longer exists in vCenter.", "not_found", True)
        if isinstance(exc, vim.fault.CustomizationFault | vim.fault.NicSettingMismatch):
            return error(f"vCenter refused the guest customization ({_fault_text(exc)}).", "customization", True)
        if isinstance(exc, TRANSIENT_FAULTS):
            return error(f"vCenter is busy or had an internal problem ({_fault_text(exc)}).", "busy", False)
        if isinstance(exc, vmodl.MethodFault):
            return error(f"vCenter refused it ({_fault_text(exc)}).", "refused", True)
        return error(f"unexpected answer from {where} ({exc.__class__.__name__}: {exc}).", "unexpected", False)

    # --- reading -----------------------------------------------------------------------------------------------
    def _retrieve(self, content, specs):
        collector = content.propertyCollector
        result = collector.RetrievePropertiesEx(specSet=specs, options=PropertyCollector.RetrieveOptions())
        objects = list(result.objects) if result else []
        while result is not None and result.token:
            result = collector.ContinueRetrievePropertiesEx(token=result.token)
            objects.extend(result.objects)
        return objects

    def _inventory(self, content, vm_properties=()):
        """Every entity (name, parent, kind) and, for VMs, `vm_properties`: one RetrievePropertiesEx."""
        traversal = [
            _traverse(
                "folderChildren",
                vim.Folder,
                "childEntity",
                ["folderChildren", "dcVm", "dcHost", "dcDs", "dcNet", "crHost", "crPool"],
            ),
            _traverse("dcVm", vim.Datacenter, "vmFolder", ["folderChildren"]),
            _traverse("dcHost", vim.Datacenter, "hostFolder", ["folderChildren"]),
            _traverse("dcDs", vim.Datacenter, "datastoreFolder", ["folderChildren"]),
            _traverse("dcNet", vim.Datacenter, "networkFolder", ["folderChildren"]),
            _traverse("crHost", vim.ComputeResource, "host", []),
            _traverse("crPool", vim.ComputeResource, "resourcePool", ["rpPool"]),
            _traverse("rpPool", vim.ResourcePool, "resourcePool", ["rpPool"]),
        ]
        prop_set = [PropertyCollector.PropertySpec(type=vim.ManagedEntity, pathSet=["name", "parent"])]
        if vm_properties:
            prop_set.append(PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=list(vm_properties)))
        spec = PropertyCollector.FilterSpec(
            objectSet=[PropertyCollector.ObjectSpec(obj=content.rootFolder, skip=False, selectSet=traversal)],
            propSet=prop_set,
        )
        entities = {}
        for item in self._retrieve(content, [spec]):
            props = {prop.name: prop.val for prop in item.propSet}
            parent = props.pop("parent", None)
            entities[item.obj._moId] = _Entity(
                obj=item.obj,
                kind=item.obj._wsdlName,
                name=props.pop("name", ""),
                parent=parent._moId if parent is not None else None,
                props=props,
            )
        return entities

    def _vm_info(self, content, moid, entities=None):
        """One VM's facts: its own properties, plus (unless given) every entity's name for paths: 2 round trips."""
        props = self._properties(content, _vm(content, moid), ["name", "parent", *_VM_PROPERTIES])
        entities = entities if entities is not None else self._inventory(content)
        parent = props.pop("parent", None)
        entity = _Entity(
            obj=_vm(content, moid),
            kind="VirtualMachine",
            name=props.pop("name", ""),
            parent=parent._moId if parent is not None else None,
            props=props,
        )
        return _to_info(entity, entities)

    def list_vms(self):
        """Every VM and template, with its facts: one round trip."""

        def list_all(content):
            entities = self._inventory(content, _VM_PROPERTIES)
            vms = [e for e in entities.values() if e.kind == "VirtualMachine"]
            return sorted((_to_info(vm, entities) for vm in vms), key=lambda info: (info.name, info.moid))

        return self._call("list the VMs in vCenter", list_all)

    def list_templates(self):
        return [vm for vm in self.list_vms() if vm.is_template]

    def list_vm_facts(self, *, owner_field=OWNERSHIP_FIELD):
        """Every VM and template as `VmFacts`, with the value of the custom field `owner_field`: one
        RetrievePropertiesEx (the field's key comes from the CustomFieldsManager in the same request)."""

        def read(content):
            object_set = [PropertyCollector.ObjectSpec(obj=content.rootFolder, skip=False, selectSet=_vm_traversal())]
            prop_set = [PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=list(_FACT_PROPERTIES))]
            fields_manager = content.customFieldsManager
            if fields_manager is not None:  # a standalone ESXi host has none
                object_set.append(PropertyCollector.ObjectSpec(obj=fields_manager, skip=False))
                prop_set.append(PropertyCollector.PropertySpec(type=vim.CustomFieldsManager, pathSet=["field"]))
            spec = PropertyCollector.FilterSpec(objectSet=object_set, propSet=prop_set)
            vms, definitions = [], []
            for item in self._retrieve(content, [spec]):
                props = {prop.name: prop.val for prop in item.propSet}
                if isinstance(item.obj, vim.CustomFieldsManager):
                    definitions = list(props.get("field") or ())
                else:
                    vms.append((item.obj._moId, props))
            key = _field_key(definitions, owner_field)
            if key is not None:
                self._field_keys[owner_field] = key
            return sorted(
                (_to_facts(moid, props, key) for moid, props in vms), key=lambda facts: (facts.name, facts.moid)
            )

        return self._call("read the VMs' power, heartbeat and owner in vCenter", read)

    # --- custom attributes (the ownership marker) ------------------------------------------------------------
    def custom_field_ensure(self, name=OWNERSHIP_FIELD):
        """The key of the VM custom attribute `name`, defining it in vCenter first when it does not exist yet."""
        if name in self._field_keys:
            return self._field_keys[name]
        action = f"define the custom attribute {name!r} in vCenter"

        def ensure(content):
            manager = content.customFieldsManager
            if manager is None:
                raise IntegrationError(
                    f"Could not {action}: this vCenter has no custom attributes (is it a standalone ESXi host?).",
                    system=SYSTEM,
                    permanent=True,
                    code="unsupported",
                )
            key = _field_key(self._properties(content, manager, ["field"]).get("field") or (), name)
            if key is not None:
                return key
            try:
                return manager.AddCustomFieldDef(name=name, moType=vim.VirtualMachine).key
            except vim.fault.DuplicateName:  # defined meanwhile by another client
                return _field_key(self._properties(content, manager, ["field"]).get("field") or (), name)

        key = self._call(action, ensure)
        self._field_keys[name] = key
        return key

    def set_custom_value(self, moid, value, *, name=OWNERSHIP_FIELD):
        """Set the VM's custom attribute `name` (defined on first use) to `value`, e.g. the ownership marker."""
        self.custom_field_ensure(name)
        self._call(
            f"set the custom attribute {name!r} of VM {moid}",
            lambda content: _vm(content, moid).setCustomValue(key=name, value=str(value)),
            subject=f"VM {moid}",
        )

    def find_vm(self, name):
        """The VM or template called `name`, or None. Several with that name: IntegrationError (ambiguous)."""

        def find(content):
            entities = self._inventory(content)
            matches = [e for e in entities.values() if e.kind == "VirtualMachine" and e.name == name]
            if len(matches) > 1:
                ids = ", ".join(_id(m) for m in matches)
                raise IntegrationError(
                    f"Several VMs are called {name!r} in vCenter ({ids}); rename them so the name identifies one.",
                    system=SYSTEM,
                    permanent=True,
                    code="ambiguous_name",
                )
            return self._vm_info(content, _id(matches[0]), entities) if matches else None

        return self._call(f"look up VM {name!r}", find)

    def get_vm(self, moid):
        """The VM or template with managed object id `moid`; IntegrationError(code="not_found") when gone."""
        return self._call(f"look up VM {moid}", lambda content: self._vm_info(content, moid), subject=f"VM {moid}")

    def name_taken(self, name):
        """True when any VM or template in vCenter has this name (vCenter refuses duplicates in a folder; the
        portal keeps names unique across the inventory so a name identifies one VM)."""
        return self._call(
            "check VM names in vCenter",
            lambda content: any(
                e.name == name for e in self._inventory(content).values() if e.kind == "VirtualMachine"
            ),
        )

    def rename_vm(self, moid, *, name, timeout=300.0):
        """Rename a VM or template (refused when another VM has that name)."""
        vm = self.get_vm(moid)
        if vm.name == name:
            return vm
        action = f"rename VM {vm.name!r} to {name!r}"

        def rename(content):
            _check_name(action, name, self._inventory(content))
            return _vm(content, moid).Rename_Task(newName=name)

        self._run_task(action, rename, timeout, subject=f"VM {vm.name!r}")
        return self.get_vm(moid)

    # --- templates -----------------------------------------------------------------------------------------------
    def mark_as_template(self, moid, *, power_off=False, timeout=300.0):
        """Turn the VM into a template in place. A powered-on VM is refused unless `power_off` allows powering it
        off first (a hard power-off: shut the guest down yourself first if it matters)."""
        vm = self.get_vm(moid)
        action = f"mark VM {vm.name!r} as a template"
        if vm.is_template:
            raise IntegrationError(
                f"Could not {action}: it is already a template.", system=SYSTEM, permanent=True, code="is_template"
            )
        if vm.power_state != POWERED_OFF:
            if not power_off:
                raise IntegrationError(
                    f"Could not {action}: the VM is {vm.power_state}. Power it off first or allow the portal to "
                    "power it off, or clone it into a new template instead.",
                    system=SYSTEM,
                    permanent=True,
                    code="wrong_power_state",
                )
            self._run_task(action, lambda c: _vm(c, moid).PowerOffVM_Task(), timeout, subject=f"VM {vm.name!r}")
        self._call(action, lambda c: _vm(c, moid).MarkAsTemplate(), subject=f"VM {vm.name!r}")
        return self.get_vm(moid)

    def clone_to_template(self, moid, *, name, folder=None, datastore=None, timeout=600.0):
        """Clone the VM into a new template called `name`, leaving the source as it is (running or not)."""
        source = self.get_vm(moid)
        action = f"clone VM {source.name!r} into template {name!r}"

        def clone(content):
            entities = self._inventory(content)
            _check_name(action, name, entities)
            folder_obj = _resolve_folder(action, entities, folder, default=entities[moid].parent)
            relocate = vim.vm.RelocateSpec()
            if datastore:
                relocate.datastore = _resolve_named(action, entities, "Datastore", datastore, "datastore").obj
            spec = vim.vm.CloneSpec(location=relocate, template=True, powerOn=False)
            return _vm(content, moid).CloneVM_Task(folder=folder_obj, name=name, spec=spec)

        new_ref = self._run_task(action, clone, timeout, subject=f"VM {source.name!r}")
        return self.get_vm(new_ref._moId)

    def delete_template(self, moid, *, timeout=300.0):
        """Destroy a template in vCenter (refused for a VM that is not a template)."""
        vm = self.get_vm(moid)
        action = f"delete template {vm.name!r}"
        if not vm.is_template:
            raise IntegrationError(
                f"Could not {action}: {vm.name!r} is not a template any more; the portal does not delete VMs.",
                system=SYSTEM,
                permanent=True,
                code="not_template",
            )
        self._run_task(action, lambda c: _vm(c, moid).Destroy_Task(), timeout, subject=f"template {vm.name!r}")

    # --- VMs from templates ---------------------------------------------------------------------------------------
    def clone_from_template(
        self, template_moid, *, name, folder=None, resource_pool=None, datastore=None, network=None, timeout=600.0
    ):
        """Clone a powered-off VM called `name` from the template.

        folder: inventory path ("/DC0/vm/web") - default: the template's folder. resource_pool: inventory path of a
        pool or of a cluster (its root pool) - default: the root pool of the template's cluster/host. datastore and
        network: names - default: the template's. Customize and power on afterwards.
        """
        template = self.get_vm(template_moid)
        action = f"clone VM {name!r} from template {template.name!r}"
        if not template.is_template:
            raise IntegrationError(
                f"Could not {action}: {template.name!r} is not a template.",
                system=SYSTEM,
                permanent=True,
                code="not_template",
            )

        def clone(content):
            entities = self._inventory(content)
            _check_name(action, name, entities)
            folder_obj = _resolve_folder(action, entities, folder, default=entities[template_moid].parent)
            relocate = vim.vm.RelocateSpec(pool=_resolve_pool(action, entities, resource_pool, template))
            if datastore:
                relocate.datastore = _resolve_named(action, entities, "Datastore", datastore, "datastore").obj
            if network:
                relocate.deviceChange = self._network_change(content, action, entities, template_moid, network)
            spec = vim.vm.CloneSpec(location=relocate, template=False, powerOn=False)
            return _vm(content, template_moid).CloneVM_Task(folder=folder_obj, name=name, spec=spec)

        new_ref = self._run_task(action, clone, timeout, subject=f"template {template.name!r}")
        return self.get_vm(new_ref._moId)

    def _network_change(self, content, action, entities, vm_moid, network_name):
        net = _resolve_named(action, entities, ("Network", "DistributedVirtualPortgroup"), network_name, "network")
        devices = self._properties(content, _vm(content, vm_moid), ["config.hardware.device"]).get(
            "config.hardware.device", []
        )
        nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        if not nics:
            raise IntegrationError(
                f"Could not {action}: the template has no network card to connect to {network_name!r}.",
                system=SYSTEM,
                permanent=True,
                code="no_nic",
            )
        nic = nics[0]
        if net.kind == "DistributedVirtualPortgroup":
            pg = self._properties(content, net.obj, ["key", "config.distributedVirtualSwitch"])
            dvs = self._properties(content, pg["config.distributedVirtualSwitch"], ["uuid"])
            nic.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(portgroupKey=pg["key"], switchUuid=dvs["uuid"])
            )
        else:
            nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=net.name, network=net.obj)
        return [vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=nic)]

    def customize(self, moid, customization, *, timeout=300.0):
        """Apply hostname, static IP, netmask, gateway and DNS to the (powered-off) VM's first NIC."""
        customization.validate()
        vm = self.get_vm(moid)
        action = f"customize VM {vm.name!r}"
        if vm.power_state != POWERED_OFF:
            raise IntegrationError(
                f"Could not {action}: the VM is {vm.power_state}; guest customization needs it powered off.",
                system=SYSTEM,
                permanent=True,
                code="wrong_power_state",
            )
        c = customization
        adapter = vim.vm.customization.IPSettings(
            ip=vim.vm.customization.FixedIp(ipAddress=c.ip_address),
            subnetMask=c.netmask,
            gateway=[c.gateway] if c.gateway else [],
            dnsServerList=list(c.dns_servers),
            dnsDomain=c.domain,
        )
        spec = vim.vm.customization.Specification(
            identity=vim.vm.customization.LinuxPrep(
                hostName=vim.vm.customization.FixedName(name=c.hostname), domain=c.domain, hwClockUTC=True
            ),
            globalIPSettings=vim.vm.customization.GlobalIPSettings(dnsServerList=list(c.dns_servers)),
            nicSettingMap=[vim.vm.customization.AdapterMapping(adapter=adapter)],
        )
        self._run_task(
            action, lambda content: _vm(content, moid).CustomizeVM_Task(spec=spec), timeout, subject=f"VM {vm.name!r}"
        )

    def power_on(self, moid, *, timeout=300.0):
        vm = self.get_vm(moid)
        if vm.power_state == POWERED_ON:
            return
        self._power(vm, "PowerOnVM_Task", "power on", timeout)

    def power_off(self, moid, *, timeout=300.0):
        vm = self.get_vm(moid)
        if vm.power_state == POWERED_OFF:
            return
        self._power(vm, "PowerOffVM_Task", "power off", timeout)

    def shutdown_guest(self, moid, *, timeout=120.0, interval=1.0, task_timeout=300.0):
        """Ask the guest OS to shut down (ShutdownGuest, through VMware Tools) and wait until the VM is powered off;
        power it off when the guest refuses (no Tools) or is still on after `timeout` seconds. Returns how it
        ended: "shutdown", "powered_off" (the fallback) or "already_off"."""
        vm = self.get_vm(moid)
        if vm.power_state == POWERED_OFF:
            return "already_off"
        subject = f"VM {vm.name!r}"
        try:
            self._call(
                f"shut down the guest of VM {vm.name!r}", lambda c: _vm(c, moid).ShutdownGuest(), subject=subject
            )
        except IntegrationError as exc:
            if exc.code in ("unreachable", "timeout", "login_failed", "no_permission", "not_found", "tls_untrusted"):
                raise
            # The guest cannot be asked (VMware Tools not running, ...): power off is the fallback.
        else:
            deadline = time.monotonic() + timeout
            while True:
                if self.get_vm(moid).power_state == POWERED_OFF:
                    return "shutdown"
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        if self.get_vm(moid).power_state == POWERED_OFF:
            return "shutdown"
        self._power(vm, "PowerOffVM_Task", "power off", task_timeout)
        return "powered_off"

    def _power(self, vm, method, verb, timeout):
        self._run_task(
            f"{verb} VM {vm.name!r}", lambda c: getattr(_vm(c, vm.moid), method)(), timeout, subject=f"VM {vm.name!r}"
        )

    def wait_for_guest_ip(self, moid, *, timeout=300.0, interval=1.0, expected=None):
        """Poll until VMware Tools reports an IPv4 address (`expected` when given) and return it."""
        action = f"wait for the guest IP of VM {moid}"
        deadline = time.monotonic() + timeout
        while True:
            props = self._call(
                action,
                lambda content: self._properties(content, _vm(content, moid), ["name", "guest.ipAddress", "guest.net"]),
                subject=f"VM {moid}",
            )
            addresses = _guest_ipv4(props)
            if expected and expected in addresses:
                return expected
            if addresses and not expected:
                return addresses[0]
            if time.monotonic() + interval > deadline:
                seen = ", ".join(addresses) or "none"
                raise IntegrationError(
                    f"Timed out after {timeout:g} s waiting for VM {props.get('name', moid)!r} to report "
                    f"{'the IP ' + expected if expected else 'an IP address'} (seen: {seen}). Check that the VM "
                    "booted and that VMware Tools runs in it.",
                    system=SYSTEM,
                    permanent=False,
                    code="timeout",
                )
            time.sleep(interval)

    def destroy_vm(self, moid, *, power_off=True, timeout=300.0):
        """Power the VM off (when allowed) and delete it from vCenter and disk. A VM already gone is not an error."""
        try:
            vm = self.get_vm(moid)
        except IntegrationError as exc:
            if exc.code == "not_found":
                return
            raise
        action = f"destroy VM {vm.name!r}"
        if vm.power_state != POWERED_OFF:
            if not power_off:
                raise IntegrationError(
                    f"Could not {action}: the VM is {vm.power_state}.",
                    system=SYSTEM,
                    permanent=True,
                    code="wrong_power_state",
                )
            self._power(vm, "PowerOffVM_Task", "power off", timeout)
        self._run_task(action, lambda c: _vm(c, moid).Destroy_Task(), timeout, subject=f"VM {vm.name!r}")

    # --- tasks ---------------------------------------------------------------------------------------------------
    def _properties(self, content, obj, paths):
        spec = PropertyCollector.FilterSpec(
            objectSet=[PropertyCollector.ObjectSpec(obj=obj, skip=False)],
            propSet=[PropertyCollector.PropertySpec(type=type(obj), pathSet=list(paths))],
        )
        objects = self._retrieve(content, [spec])
        return {prop.name: prop.val for prop in objects[0].propSet} if objects else {}

    def _run_task(self, action, start, timeout, *, subject=None):
        """Start a task with start(content) and wait for it; return its result."""
        task = self._call(action, start, subject=subject)
        deadline = time.monotonic() + timeout
        interval = 0.05
        while True:
            info = self._call(
                action, lambda content: self._properties(content, task, ["info"]).get("info"), subject=subject
            )
            if info is not None and info.state == vim.TaskInfo.State.success:
                return info.result
            if info is not None and info.state == vim.TaskInfo.State.error:
                raise self._error(info.error, action, subject)
            if time.monotonic() > deadline:
                raise IntegrationError(
                    f"Could not {action}: vCenter did not finish the task within {timeout:g} s (it may still "
                    "finish; check the task list in vCenter).",
                    system=SYSTEM,
                    permanent=False,
                    code="timeout",
                )
            time.sleep(interval)
            interval = min(interval * 2, 1.0)


# --- helpers (pure) ----------------------------------------------------------------------------------------------
def _traverse(name, kind, path, select):
    return PropertyCollector.TraversalSpec(
        name=name,
        type=kind,
        path=path,
        skip=False,
        selectSet=[PropertyCollector.SelectionSpec(name=s) for s in select],
    )


def _vm(content, moid):
    return vim.VirtualMachine(moid, content.rootFolder._stub)


def _vm_traversal():
    """From the root folder to every VM: folders, each datacenter's VM folder, vApps."""
    return [
        _traverse("folderChildren", vim.Folder, "childEntity", ["folderChildren", "dcVm", "vAppVm"]),
        _traverse("dcVm", vim.Datacenter, "vmFolder", ["folderChildren"]),
        _traverse("vAppVm", vim.VirtualApp, "vm", []),
    ]


def _field_key(definitions, name):
    """The key of the VM custom field `name` among CustomFieldDefs (fields for every type count too)."""
    for definition in definitions:
        if definition.name == name and definition.managedObjectType in (None, vim.VirtualMachine):
            return definition.key
    return None


def _to_facts(moid, props, owner_key):
    owner = ""
    if owner_key is not None:
        # The last value of the key: the simulator appends a value on every set where vCenter replaces it.
        for value in props.get("customValue") or ():
            if value.key == owner_key:
                owner = getattr(value, "value", "") or ""
    return VmFacts(
        moid=moid,
        name=props.get("name", ""),
        instance_uuid=props.get("config.instanceUuid") or "",
        power_state=str(props.get("runtime.powerState") or POWERED_OFF),
        guest_heartbeat=str(props.get("summary.quickStats.guestHeartbeatStatus") or "gray"),
        ip_address=props.get("guest.ipAddress") or "",
        owner=owner.strip(),
        is_template=bool(props.get("config.template")),
    )


def _fault_text(fault):
    message = getattr(fault, "msg", "") or getattr(fault, "localizedMessage", "") or ""
    return f"{fault.__class__.__name__.rsplit('.', 1)[-1]}{': ' + message if message else ''}"


def _not_found(action, message):
    return IntegrationError(f"Could not {action}: {message}.", system=SYSTEM, permanent=True, code="not_found")


def _path(entities, moid):
    """Inventory path ("/DC0/vm/web") of an entity, without the root folder."""
    names = []
    while moid is not None and moid in entities:
        entity = entities[moid]
        if entity.parent is None:  # the root folder ("Datacenters") is not part of paths
            break
        names.append(entity.name)
        moid = entity.parent
    return "/" + "/".join(reversed(names))


def _ancestor(entities, moid, kinds):
    while moid is not None and moid in entities:
        if entities[moid].kind in kinds:
            return entities[moid]
        moid = entities[moid].parent
    return None


def _to_info(entity, entities):
    props = entity.props
    moid = entity.obj._moId
    host_ref = props.get("runtime.host")
    host = entities.get(host_ref._moId) if host_ref is not None else None
    compute = entities.get(host.parent) if host is not None else None
    cluster = compute.name if compute is not None and compute.kind == "ClusterComputeResource" else ""
    datacenter = _ancestor(entities, entity.parent, ("Datacenter",))
    pool = props.get("resourcePool")
    storage = [props.get("summary.storage.committed"), props.get("summary.storage.uncommitted")]
    known = [value for value in storage if value is not None]
    return VirtualMachineInfo(
        moid=moid,
        name=entity.name,
        instance_uuid=props.get("config.instanceUuid") or "",
        power_state=str(props.get("runtime.powerState") or POWERED_OFF),
        is_template=bool(props.get("config.template")),
        guest_os=props.get("config.guestFullName") or "",
        num_cpus=props.get("config.hardware.numCPU"),
        memory_mb=props.get("config.hardware.memoryMB"),
        disk_gb=round(sum(known) / 1024**3, 2) if known else None,
        ip_address=props.get("guest.ipAddress") or "",
        hostname=props.get("guest.hostName") or "",
        datacenter=datacenter.name if datacenter else "",
        folder=_path(entities, entity.parent),
        host=host.name if host is not None else "",
        cluster=cluster,
        resource_pool=_path(entities, pool._moId) if pool is not None else "",
        datastores=tuple(entities[d._moId].name for d in props.get("datastore", []) if d._moId in entities),
        networks=tuple(entities[n._moId].name for n in props.get("network", []) if n._moId in entities),
    )


def _check_name(action, name, entities):
    if not name or len(name) > 80 or "/" in name:
        raise IntegrationError(
            f"Could not {action}: {name!r} is not a valid VM name (1-80 characters, no '/').",
            system=SYSTEM,
            permanent=True,
            code="bad_name",
        )
    taken = [e for e in entities.values() if e.kind == "VirtualMachine" and e.name == name]
    if taken:
        raise IntegrationError(
            f"Could not {action}: the name {name!r} is already taken by {taken[0].obj._moId} in vCenter.",
            system=SYSTEM,
            permanent=True,
            code="name_taken",
        )


def _resolve_named(action, entities, kinds, name, what):
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    matches = [e for e in entities.values() if e.kind in kinds and (e.name == name or _path(entities, _id(e)) == name)]
    if not matches:
        raise _not_found(action, f"there is no {what} {name!r} in vCenter")
    return matches[0]


def _id(entity):
    return entity.obj._moId


def _resolve_folder(action, entities, folder, *, default):
    if not folder:
        return entities[default].obj
    entity = _resolve_named(action, entities, ("Folder",), folder, "VM folder")
    return entity.obj


def _resolve_pool(action, entities, pool, template):
    if pool:
        entity = _resolve_named(
            action, entities, ("ResourcePool", "ClusterComputeResource", "ComputeResource"), pool, "resource pool"
        )
        if entity.kind != "ResourcePool":
            roots = [e for e in entities.values() if e.kind == "ResourcePool" and e.parent == _id(entity)]
            if not roots:
                raise _not_found(action, f"{pool!r} has no resource pool")
            entity = roots[0]
        return entity.obj
    host = next((e for e in entities.values() if e.kind == "HostSystem" and e.name == template.host), None)
    roots = [e for e in entities.values() if e.kind == "ResourcePool" and host and e.parent == host.parent]
    if not roots:
        raise _not_found(action, f"no resource pool found for template {template.name!r}; name one")
    return roots[0].obj


def _guest_ipv4(props):
    addresses = []
    primary = props.get("guest.ipAddress")
    if primary:
        addresses.append(primary)
    for nic in props.get("guest.net", []) or []:
        addresses.extend(nic.ipAddress or [])
    result = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_link_local and address not in result:
            result.append(address)
    return result

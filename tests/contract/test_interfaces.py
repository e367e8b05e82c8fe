"""Every implementation of an interface in :mod:`relayd.interfaces` really provides it:
``verifyClass`` on every class of relayd that declares one, and ``verifyObject`` (attributes
too) on every such object alive while the in-memory relay serves each door."""

import gc
import importlib
import pkgutil

from zope.interface.exceptions import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyClass, verifyObject

import relayd
from relayd import interfaces
from tests.contract import harness
from tests.contract.doors import DOORS

INTERFACES = [v for v in vars(interfaces).values()
              if isinstance(v, InterfaceClass) and v.__module__ == interfaces.__name__]

def relayd_classes():
    """Every class of the relay's own modules (the client SDK implements none of these)."""
    for info in pkgutil.walk_packages(relayd.__path__, relayd.__name__ + "."):
        if info.name.startswith("relayd.client"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                yield value


def implementations():
    return {(cls, iface) for cls in relayd_classes() for iface in INTERFACES if iface.implementedBy(cls)}


def test_every_interface_has_an_implementation_and_each_verifies():
    found = implementations()
    assert {iface for _cls, iface in found} == set(INTERFACES)
    for cls, iface in found:
        assert verifyClass(iface, cls)


def check_live_objects(seen, broken):
    """verifyObject on every live relayd object that declares one of the interfaces."""
    gc.collect()
    for obj in gc.get_objects():
        cls = type(obj)
        if not str(getattr(cls, "__module__", "")).startswith("relayd."):
            continue
        transport = getattr(obj, "transport", ())
        if transport is None or getattr(transport, "disconnected", False):
            continue  # a closed connection still referenced by an earlier test's frames
        for iface in INTERFACES:
            if iface.providedBy(obj):
                try:
                    verifyObject(iface, obj)
                except Invalid as e:
                    broken[(cls.__name__, iface.__name__)] = str(e)
                seen.add((cls, iface))


def test_live_objects_provide_their_interfaces(tmp_path, monkeypatch):
    relay = harness.MemoryRelay(tmp_path)
    # offers live only until they are sent: keep each one the doors hand the switchboard
    offers = []
    switchboard = relay.service.switchboard
    open_rendezvous = switchboard.open_rendezvous

    def keeping_the_offer(path, offer, *args, **kwargs):
        offers.append(offer)
        return open_rendezvous(path, offer, *args, **kwargs)

    monkeypatch.setattr(switchboard, "open_rendezvous", keeping_the_offer)
    control = harness.listen(relay)
    for door_class in DOORS:  # a sender on every door, offered to the listener
        door_class(relay).start()
        relay.pump()
    seen, broken = set(), {}
    assert len(offers) == len(DOORS)
    check_live_objects(seen, broken)  # pending: the offers
    legs = [harness.accept(relay, offer) for offer in control.offers if "accept" in offer]
    assert legs and all(leg.opened for leg in legs)
    check_live_objects(seen, broken)  # paired: the legs
    relay.stop()
    assert not broken, "objects that do not provide what they declare: %s" % broken
    # every implementation was alive and checked -- but relayd.cluster's, which live only on a
    # clustered node (tests/unit/test_cluster_routing.py::test_the_routing_objects_provide_their_interfaces)
    assert {(cls, iface) for cls, iface in implementations() - seen
            if not cls.__module__.startswith("relayd.cluster.")} == set()

"""The DDS bus: one CycloneDDS domain and participant per process, on one network interface.

The robot is reached as Unitree's SDK reaches it (ChannelFactoryInitialize(0, IF)): domain 0 on the
interface wired to the robot, multicast discovery. The simulated robot and the tests use the
loopback interface `lo` and a non-zero domain. Linux's `lo` has no MULTICAST flag, so on `lo`
discovery is unicast to 127.0.0.1: that is the one place that differs, `cyclonedds_config` below.
Quality of service is CycloneDDS's default (reliable writers, keep-last-1), as the SDK leaves it, so
that this code's readers and writers match the robot's own.
"""
from __future__ import annotations

from mjx_env.errors import UserError

LOOPBACK = "lo"
# Participants on one host find each other by probing the unicast ports of participant indices
# 0..MAX_PARTICIPANTS-1 (CycloneDDS's ParticipantIndex auto); a sim robot, a controller and a probe.
MAX_PARTICIPANTS = 12


def cyclonedds_config(interface: str) -> str:
    """CycloneDDS XML for one interface: unicast discovery on loopback, the SDK's settings elsewhere."""
    if interface == LOOPBACK:
        return f"""<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS><Domain Id="any">
  <General><Interfaces><NetworkInterface name="{LOOPBACK}"/></Interfaces><AllowMulticast>false</AllowMulticast></General>
  <Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>{MAX_PARTICIPANTS}</MaxAutoParticipantIndex>
    <Peers><Peer Address="127.0.0.1"/></Peers></Discovery>
</Domain></CycloneDDS>"""
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS><Domain Id="any">
  <General><Interfaces><NetworkInterface name="{interface}" priority="default" multicast="default"/></Interfaces></General>
</Domain></CycloneDDS>"""


def check_interface(interface: str) -> None:
    """A one-line refusal for a network interface this machine does not have."""
    import socket
    names = [name for _, name in socket.if_nameindex()]
    if interface not in names:
        raise UserError(f"no network interface {interface!r} on this machine (have: {', '.join(names)}); "
                        f"pass --interface with the one wired to the robot, or {LOOPBACK} for the simulated robot")


def check_domain(domain: int) -> None:
    if not 0 <= domain <= 232:      # DDS's domain ids that map to valid UDP ports
        raise UserError(f"--domain must lie in 0..232, got {domain}")


class Bus:
    """One domain participant; readers poll (take) so that the caller's loop owns all timing."""

    def __init__(self, domain: int, interface: str):
        check_domain(domain)
        check_interface(interface)
        from cyclonedds.core import DDSException
        from cyclonedds.domain import Domain, DomainParticipant
        try:
            self._domain = Domain(domain, cyclonedds_config(interface))
            self.participant = DomainParticipant(domain)
        except DDSException as exc:
            raise UserError(f"cannot join DDS domain {domain} on {interface}: {exc}") from None
        self._topics = {}

    def topic(self, name: str, msg_type):
        from cyclonedds.topic import Topic
        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, msg_type)
        return self._topics[name]

    def writer(self, name: str, msg_type):
        from cyclonedds.pub import DataWriter
        return DataWriter(self.participant, self.topic(name, msg_type))

    def reader(self, name: str, msg_type, listener=None):
        from cyclonedds.sub import DataReader
        return DataReader(self.participant, self.topic(name, msg_type), listener=listener)

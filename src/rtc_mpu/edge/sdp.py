"""What the edge checks in a WHIP client's SDP before Janus sees it, and in Janus' answer after.

Plain text parsing (RFC 8866 lines ``<type>=<value>``), the standard library only. The checks are the
ones a publisher can get wrong and Janus would answer unclearly (or by silently dropping a stream):

* the offer is SDP at all (``v=0`` first, well-formed lines, at most :data:`MAX_SECTIONS` media
  sections, no control characters), and a WebRTC offer (ICE credentials and a DTLS fingerprint);
* it sends audio and/or video (a section with a port other than 0 and a direction that sends);
* every audio and video section it sends offers a codec the room takes (:data:`ROOM_CODECS`: the
  rooms our API creates take ``opus`` audio and ``vp8``/``h264`` video);
* Janus' answer accepted every section the offer sends (a room with fewer codecs answers port 0).

Trickle ICE fragments (``application/trickle-ice-sdpfrag``, RFC 8840) for ``PATCH`` are parsed by
:func:`parse_trickle`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Codecs (lower-case rtpmap encoding names) the rooms our API creates take, per media kind
#: (VideoRoom ``audiocodec = "opus"``, ``videocodec = "vp8,h264"``).
ROOM_CODECS: dict[str, frozenset[str]] = {
    "audio": frozenset({"opus"}),
    "video": frozenset({"vp8", "h264"}),
}
#: Most media sections (``m=`` lines) an offer may have.
MAX_SECTIONS = 8
#: Longest SDP line, characters.
MAX_LINE = 4096
#: Static RTP payload types (RFC 3551) a client may offer without an rtpmap line.
STATIC_PAYLOADS = {
    "0": "pcmu",
    "3": "gsm",
    "8": "pcma",
    "9": "g722",
    "18": "g729",
    "26": "jpeg",
    "34": "h263",
}

_LINE = re.compile(r"[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*")
_MEDIA = re.compile(r"m=(\S+) (\d+)(?:/\d+)? (\S+)((?: \S+)*)")
_RTPMAP = re.compile(r"a=rtpmap:(\d+) ([^/\s]+)/")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """An offer (or an answer, or a trickle fragment) the edge refuses.

    Attributes:
        code: the error code of the HTTP answer: ``InvalidSdp.Malformed``, ``InvalidSdp.NoMedia`` or
            ``InvalidSdp.Codec`` (all HTTP 400).
        message: what is wrong, for the client.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class MediaSection:
    """One ``m=`` section.

    Attributes:
        kind: ``audio``, ``video``, ``application``...
        port: the port (0: the section is rejected or disabled).
        mid: its ``a=mid``, or None.
        codecs: lower-case encoding names of its payload types, in offer order.
        direction: ``sendrecv`` (the default), ``sendonly``, ``recvonly`` or ``inactive``.
    """

    kind: str
    port: int
    mid: str | None = None
    codecs: list[str] = field(default_factory=list)
    direction: str = "sendrecv"
    _payloads: list[str] = field(default_factory=list, repr=False)

    @property
    def sends(self) -> bool:
        """Whether the client sends media in this section (port not 0, direction sends)."""
        return self.port != 0 and self.direction in ("sendrecv", "sendonly")


@dataclass
class Offer:
    """A checked offer.

    Attributes:
        sections: every media section, in order.
        ice_ufrag, ice_pwd: the ICE credentials of the first section (BUNDLE: one transport).
    """

    sections: list[MediaSection]
    ice_ufrag: str
    ice_pwd: str

    @property
    def kinds(self) -> set[str]:
        """The media kinds (``audio``, ``video``) the client sends."""
        return {s.kind for s in self.sections if s.sends and s.kind in ROOM_CODECS}


def _lines(text: str) -> list[str]:
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE:
            raise SdpError("InvalidSdp.Malformed", f"SDP line {number} is longer than {MAX_LINE} characters")
        if not _LINE.fullmatch(line):
            raise SdpError(
                "InvalidSdp.Malformed", f"SDP line {number} is not '<letter>=<value>': {line[:60]!r}"
            )
    return lines


def parse_sections(text: str) -> tuple[list[str], list[MediaSection], dict[int, list[str]]]:
    """Split SDP into its session-level lines and its media sections (with each section's lines).

    Raises:
        SdpError: ``InvalidSdp.Malformed``: not ``v=0`` first, a malformed line or ``m=`` line, or
            more than :data:`MAX_SECTIONS` sections.
    """
    lines = _lines(text)
    if not lines or lines[0] != "v=0":
        raise SdpError("InvalidSdp.Malformed", "the body is not SDP: it must start with 'v=0'")
    session: list[str] = []
    sections: list[MediaSection] = []
    section_lines: dict[int, list[str]] = {}
    for line in lines:
        if line.startswith("m="):
            match = _MEDIA.fullmatch(line)
            if match is None:
                raise SdpError("InvalidSdp.Malformed", f"malformed media line {line[:60]!r}")
            if len(sections) == MAX_SECTIONS:
                raise SdpError("InvalidSdp.Malformed", f"more than {MAX_SECTIONS} media sections")
            section = MediaSection(match.group(1).lower(), int(match.group(2)))
            section._payloads = match.group(4).split()
            sections.append(section)
            section_lines[len(sections) - 1] = []
            continue
        if not sections:
            session.append(line)
            continue
        section = sections[-1]
        section_lines[len(sections) - 1].append(line)
        if line.startswith("a=mid:"):
            section.mid = line[len("a=mid:") :].strip()
        elif line[2:] in _DIRECTIONS:
            section.direction = line[2:]
    for index, section in enumerate(sections):
        names: dict[str, str] = {}
        for line in section_lines[index]:
            if rtpmap := _RTPMAP.match(line):
                names[rtpmap.group(1)] = rtpmap.group(2).lower()
        section.codecs = [
            names.get(pt) or STATIC_PAYLOADS.get(pt, f"payload {pt}") for pt in section._payloads
        ]
    session_direction = next((line[2:] for line in session if line[2:] in _DIRECTIONS), None)
    if session_direction:
        for index, section in enumerate(sections):
            if not any(line[2:] in _DIRECTIONS for line in section_lines[index]):
                section.direction = session_direction
    return session, sections, section_lines


def _attribute(name: str, session: list[str], lines: list[str]) -> str | None:
    prefix = f"a={name}:"
    for line in (*lines, *session):
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def check_offer(text: str) -> Offer:
    """Check a WHIP client's offer (see the module docstring).

    Raises:
        SdpError: ``InvalidSdp.Malformed`` (not SDP, not WebRTC: no ICE credentials or DTLS
            fingerprint), ``InvalidSdp.NoMedia`` (sends neither audio nor video) or
            ``InvalidSdp.Codec`` (an audio or video section offers no codec of :data:`ROOM_CODECS`).
    """
    session, sections, section_lines = parse_sections(text)
    if not sections:
        raise SdpError("InvalidSdp.NoMedia", "the offer has no media section (m=audio / m=video)")
    first = section_lines[0]
    ufrag = _attribute("ice-ufrag", session, first)
    pwd = _attribute("ice-pwd", session, first)
    if not ufrag or not pwd:
        raise SdpError("InvalidSdp.Malformed", "not a WebRTC offer: no a=ice-ufrag / a=ice-pwd")
    if not _attribute("fingerprint", session, first):
        raise SdpError("InvalidSdp.Malformed", "not a WebRTC offer: no a=fingerprint (DTLS)")
    for section in sections:
        if not section.sends or section.kind not in ROOM_CODECS:
            continue
        accepted = ROOM_CODECS[section.kind]
        if not accepted.intersection(section.codecs):
            offered = ", ".join(dict.fromkeys(section.codecs)) or "none"
            raise SdpError(
                "InvalidSdp.Codec",
                f"the {section.kind} section offers {offered}; the channel takes "
                f"{', '.join(sorted(accepted))}",
            )
    offer = Offer(sections, ufrag, pwd)
    if not offer.kinds:
        raise SdpError("InvalidSdp.NoMedia", "the offer sends neither audio nor video")
    return offer


def check_answer(offer: Offer, answer: str) -> None:
    """Check that Janus' answer accepted every audio and video section the offer sends.

    Raises:
        SdpError: ``InvalidSdp.Codec``: a section was answered with port 0 (the room takes none of
            its codecs), or ``InvalidSdp.Malformed``: the answer does not parse or has another
            number of sections.
    """
    _, answered, _ = parse_sections(answer)
    if len(answered) != len(offer.sections):
        raise SdpError("InvalidSdp.Malformed", "the answer does not match the offer's media sections")
    for offered, reply in zip(offer.sections, answered, strict=True):
        if offered.sends and offered.kind in ROOM_CODECS and reply.port == 0:
            raise SdpError(
                "InvalidSdp.Codec",
                f"the channel refused the {offered.kind} section: it takes none of "
                f"{', '.join(dict.fromkeys(offered.codecs))}",
            )


@dataclass
class TrickleFragment:
    """A trickle ICE fragment (RFC 8840) of a ``PATCH``.

    Attributes:
        ice_ufrag, ice_pwd: the credentials it names (None if absent).
        candidates: ``(mid, candidate)`` pairs, the candidate without its ``a=`` (``candidate:...``).
        end_of_candidates: whether it ends the client's gathering.
    """

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)
    end_of_candidates: bool = False


#: Most candidates one PATCH may carry.
MAX_CANDIDATES = 64


def parse_trickle(text: str) -> TrickleFragment:
    """Parse a trickle ICE fragment (``a=ice-ufrag``, ``a=ice-pwd``, ``m=``, ``a=mid``,
    ``a=candidate``, ``a=end-of-candidates`` lines; others are ignored).

    Raises:
        SdpError: ``InvalidSdp.Malformed``: a malformed line, or more than :data:`MAX_CANDIDATES`
            candidates.
    """
    fragment = TrickleFragment()
    mid: str | None = None
    for line in _lines(text):
        if line.startswith("a=ice-ufrag:"):
            fragment.ice_ufrag = line[len("a=ice-ufrag:") :].strip()
        elif line.startswith("a=ice-pwd:"):
            fragment.ice_pwd = line[len("a=ice-pwd:") :].strip()
        elif line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :].strip()
        elif line.startswith("a=candidate:"):
            if len(fragment.candidates) == MAX_CANDIDATES:
                raise SdpError("InvalidSdp.Malformed", f"more than {MAX_CANDIDATES} candidates")
            fragment.candidates.append((mid, line[2:]))
        elif line == "a=end-of-candidates":
            fragment.end_of_candidates = True
    return fragment

"""A DBC with a standard, an extended and a 64-byte CAN FD message, for the vcan tests."""

from __future__ import annotations

from pathlib import Path

_FORMATS = ",".join(f'"{name}"' for name in
                    ["StandardCAN", "ExtendedCAN", *["reserved"] * 12, "StandardCAN_FD",
                     "ExtendedCAN_FD"])

KINDS_DBC = f"""VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 Engine: 8 ECU
 SG_ Speed : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ Gear : 16|4@1+ (1,0) [0|15] "" Vector__XXX

BO_ 2566848528 Diag: 8 ECU
 SG_ Dtc : 0|32@1+ (1,0) [0|4294967295] "" Vector__XXX

BO_ 512 Wide: 64 ECU
 SG_ First : 0|16@1+ (1,0) [0|65535] "" Vector__XXX
 SG_ Last : 496|16@1+ (1,0) [0|65535] "" Vector__XXX

BO_ 768 Unplanned: 8 ECU
 SG_ Noise : 0|8@1+ (1,0) [0|255] "" Vector__XXX

BA_DEF_ BO_ "VFrameFormat" ENUM {_FORMATS};
BA_DEF_DEF_ "VFrameFormat" "StandardCAN";
BA_ "VFrameFormat" BO_ 512 14;
"""


def write_kinds_dbc(directory: Path) -> Path:
    path = directory / "kinds.dbc"
    path.write_text(KINDS_DBC, encoding="utf-8")
    return path


def kinds_source(dbc: Path, *, fd: bool = False, receive_buffer_kb: int | None = None) -> str:
    """The config's [[sources]] entry: can0 on the real vcan0, decoded with `dbc`."""
    fd_line = "fd = true\n" if fd else ""
    if receive_buffer_kb is not None:
        fd_line += f"receive_buffer_kb = {receive_buffer_kb}\n"
    return f"""
[[sources]]
name = "can0"
type = "socketcan"
channel = "vcan0"
{fd_line}dbc = ["{dbc}"]
"""

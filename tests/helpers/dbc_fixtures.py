"""A small DBC with every feature the data path must handle, for unit tests."""

from __future__ import annotations

from pathlib import Path

SMALL_DBC = """VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 Engine: 8 ECU
 SG_ Speed : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ Temp : 16|8@1- (1,-40) [-168|87] "degC" Vector__XXX
 SG_ Gear : 24|4@1+ (1,0) [0|15] "" Vector__XXX

BO_ 512 Chassis: 8 ECU
 SG_ Height : 7|16@0- (0.1,0) [-3276.8|3276.7] "mm" Vector__XXX
 SG_ Odo : 23|24@0+ (1,0) [0|16777215] "km" Vector__XXX

BO_ 768 Cells: 8 ECU
 SG_ Group M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ CellA_0 m0 : 8|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
 SG_ CellB_0 m0 : 24|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
 SG_ CellA_1 m1 : 8|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
 SG_ CellB_1 m1 : 24|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX

BO_ 2566848512 Diag: 8 ECU
 SG_ Dtc : 0|32@1+ (1,0) [0|4294967295] "" Vector__XXX

BO_ 1024 Motor: 8 ECU
 SG_ Torque : 0|32@1- (1,0) [-1000|1000] "Nm" Vector__XXX

VAL_ 256 Gear 0 "P" 1 "R" 2 "N" 3 "D" ;
SIG_VALTYPE_ 1024 Torque : 1;
"""


def write_small_dbc(directory: Path) -> Path:
    path = directory / "small.dbc"
    path.write_text(SMALL_DBC, encoding="utf-8")
    return path

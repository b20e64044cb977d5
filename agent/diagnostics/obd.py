"""OBD-II mode 01 (show current data, SAE J1979) as a udsoncan service.

udsoncan implements the ISO 14229 services; OBD-II's modes travel the same ISO-TP and the
same negative-response format, so mode 01 is one small BaseService subclass (udsoncan
finds services by their subclasses), and the client's timing, 0x78 handling and
negative-response checks apply to it unchanged.
"""

from __future__ import annotations

from typing import ClassVar

from udsoncan import Request, Response
from udsoncan.BaseService import BaseService
from udsoncan.exceptions import InvalidResponseException
from udsoncan.ResponseCode import ResponseCode


class ObdCurrentData(BaseService):
    _sid = 0x01
    _use_subfunction = False
    supported_negative_response: ClassVar[list[int]] = [
        ResponseCode.GeneralReject, ResponseCode.ServiceNotSupported,
        ResponseCode.IncorrectMessageLengthOrInvalidFormat, ResponseCode.BusyRepeatRequest,
        ResponseCode.ConditionsNotCorrect, ResponseCode.RequestOutOfRange]

    @classmethod
    def make_request(cls, pid: int) -> Request:
        return Request(service=cls, data=bytes([pid]))

    @classmethod
    def interpret_response(cls, response: Response, pid: int) -> bytes:
        """The PID's data bytes (after the echoed PID)."""
        data = response.data or b""
        if not data or data[0] != pid:
            raise InvalidResponseException(response, f"answer is not for PID 0x{pid:02X}")
        return bytes(data[1:])

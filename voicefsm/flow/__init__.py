"""Flows: statecharts that speak and listen, checked before any call.

Write a flow by subclassing :class:`VoiceFlow` and declaring states of the kinds below;
run it with :class:`voicefsm.runtime.flow_runtime.FlowRuntime`.
"""

from statemachine import State

from voicefsm.flow.chart import Step, VoiceFlow
from voicefsm.flow.checks import check_flow
from voicefsm.flow.errors import (
    FlowDefinitionError,
    FlowError,
    FlowLoadError,
    FlowProblem,
    UnknownEventError,
)
from voicefsm.flow.expect import Choice, Day, Digits, FreeText, Number, Time, YesNo
from voicefsm.flow.kinds import Ask, Do, Echo, Hangup, Result, Say, SendSms, StateKind, StepStub, Transfer
from voicefsm.flow.loader import load_flow
from voicefsm.flow.resources import Resource, ResourceError, Resources, fakes_for, open_resources, resource
from voicefsm.flow.spec import FlowSpec

__all__ = [
    "Ask",
    "Choice",
    "Day",
    "Digits",
    "Do",
    "Echo",
    "FlowDefinitionError",
    "FlowError",
    "FlowLoadError",
    "FlowProblem",
    "FlowSpec",
    "FreeText",
    "Hangup",
    "Number",
    "Resource",
    "ResourceError",
    "Resources",
    "Result",
    "Say",
    "SendSms",
    "State",
    "StateKind",
    "Step",
    "StepStub",
    "Time",
    "Transfer",
    "UnknownEventError",
    "VoiceFlow",
    "YesNo",
    "check_flow",
    "fakes_for",
    "load_flow",
    "open_resources",
    "resource",
]

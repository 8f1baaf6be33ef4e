"""Errors of experiment administration (mapped to gRPC statuses at the server's edge)."""

from __future__ import annotations

from feature_worker.errors import AisleError


class ExperimentExists(AisleError):
    """CreateExperiment with a name already used (names are never reused: exposures keep them)."""

    status = "ALREADY_EXISTS"


class ExperimentConflict(AisleError):
    """A change that cannot apply to the experiment as it stands (start a stopped one, a layer slice taken,
    a bundle version that will not load)."""

    status = "FAILED_PRECONDITION"

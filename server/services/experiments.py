"""ExperimentService: list, create, start and stop experiments (admin scope; `server.experiments.store`)."""

from __future__ import annotations

import grpc

from protos.aisle.v1 import experiments_pb2, experiments_pb2_grpc
from server.experiments.store import ExperimentStore


class ExperimentService(experiments_pb2_grpc.ExperimentServiceServicer):
    def __init__(self, store: ExperimentStore) -> None:
        self.store = store

    async def ListExperiments(
        self,
        request: experiments_pb2.ListExperimentsRequest,
        context: grpc.aio.ServicerContext[
            experiments_pb2.ListExperimentsRequest, experiments_pb2.ListExperimentsResponse
        ],
    ) -> experiments_pb2.ListExperimentsResponse:
        spec = self.store.list()
        return experiments_pb2.ListExperimentsResponse(experiments=spec.experiments, holdout=spec.holdout)

    async def CreateExperiment(
        self,
        request: experiments_pb2.CreateExperimentRequest,
        context: grpc.aio.ServicerContext[
            experiments_pb2.CreateExperimentRequest, experiments_pb2.CreateExperimentResponse
        ],
    ) -> experiments_pb2.CreateExperimentResponse:
        return experiments_pb2.CreateExperimentResponse(
            experiment=await self.store.create(request.experiment)
        )

    async def StartExperiment(
        self,
        request: experiments_pb2.StartExperimentRequest,
        context: grpc.aio.ServicerContext[
            experiments_pb2.StartExperimentRequest, experiments_pb2.StartExperimentResponse
        ],
    ) -> experiments_pb2.StartExperimentResponse:
        return experiments_pb2.StartExperimentResponse(experiment=await self.store.start(request.name))

    async def StopExperiment(
        self,
        request: experiments_pb2.StopExperimentRequest,
        context: grpc.aio.ServicerContext[
            experiments_pb2.StopExperimentRequest, experiments_pb2.StopExperimentResponse
        ],
    ) -> experiments_pb2.StopExperimentResponse:
        return experiments_pb2.StopExperimentResponse(experiment=await self.store.stop(request.name))

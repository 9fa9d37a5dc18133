"""WorkflowHandle: the status, steps and result of one started workflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TaskCancelled, TaskError
from ..models import Workflow, WorkflowStep
from ..tasks.polling import ResultPoller

if TYPE_CHECKING:
    from ..tasks.app import Conveyor

FIRST_POLL_INTERVAL_S = 0.02
MAX_POLL_INTERVAL_S = 0.5


class WorkflowHandle:
    """A started workflow, read through its app's client."""

    def __init__(self, app: Conveyor, workflow_id: str) -> None:
        self.app = app
        self.id = workflow_id

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    def get(self) -> Workflow:
        """Return the workflow with its steps, as the store has them now."""
        return self.app.client.get_workflow(self.id)

    def status(self) -> str:
        """Return running, succeeded, failed or cancelled."""
        return self.get().state

    def steps(self) -> list[WorkflowStep]:
        """Return the steps in index order, each with its state, message id and error."""
        return self.get().steps or []

    def cancel(self) -> str:
        """Cancel the workflow; return its state afterwards."""
        return self.app.client.cancel_workflow(self.id).state

    def retry(self) -> str:
        """Post again the steps whose post failed; return the workflow's state afterwards.

        Raises WorkflowNotRetryable when there is no such step, and the
        post's error when a step still cannot be posted.
        """
        return self.app.client.retry_workflow(self.id).state

    def result(self, timeout_s: float | None = 30.0) -> Any:
        """Wait for the workflow to finish and return its result.

        Raises TaskError naming the failed step and its error when it
        failed, TaskCancelled when it was cancelled, and ResultTimeout when
        it is still running after timeout_s seconds (None waits without
        limit). A read that fails with TransportError or StoreUnavailable
        (a server restarting) is retried until the deadline, and the last
        such error is raised if reads still fail then. A failed workflow
        resumes if its dead step is redriven, so calling result again later
        may still succeed.
        """
        poller = ResultPoller(
            timeout_s, f"workflow {self.id}", FIRST_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S
        )
        while True:
            workflow = poller.read(self.get)
            if workflow.state == "succeeded":
                return workflow.result
            if workflow.state == "failed":
                raise TaskError(f"workflow {self.id} failed: {workflow.error}")
            if workflow.state == "cancelled":
                raise TaskCancelled(f"workflow {self.id} was cancelled")
            poller.wait(f"running with {workflow.steps_left} steps left")

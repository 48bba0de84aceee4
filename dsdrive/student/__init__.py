"""The compact student planner (DSDrive dual head, DistillDrive planning vocabulary, RSD RiskHead).

``StudentConfig`` / ``StudentModel`` are registered with ``AutoConfig`` / ``AutoModel`` on import
(model_type ``dsdrive_student``). See :mod:`dsdrive.student.modeling_student` for the layout.
"""

from dsdrive.student.configuration_student import StudentConfig
from dsdrive.student.modeling_student import PlanOutput, StudentModel, StudentOutput, register_auto
from dsdrive.student.processing_student import StudentDataCollator, StudentProcessor

register_auto()

__all__ = ["StudentConfig", "StudentModel", "StudentOutput", "PlanOutput", "StudentProcessor", "StudentDataCollator"]

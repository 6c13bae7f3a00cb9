"""The layouts resource over JSON REST: custom layouts per AppId (CreateMPULayout, ModifyMPULayout,
DeleteMPULayout, DescribeMPULayoutInfoList), and the system layouts by id."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.schemas import (
    CustomLayoutIn,
    CustomLayoutOut,
    CustomLayoutPatchIn,
    LayoutListOut,
    LayoutQuery,
)
from rtc_mpu.api.service import LayoutPage, layout_out
from rtc_mpu.api.tasks import READ_ERRORS, WRITE_ERRORS, service

bp = APIBlueprint("layouts", __name__, url_prefix="/v1", tag="Layouts")
bp.before_request(guard_app_request)

#: Errors of a layout deletion besides 403/404.
DELETE_ERRORS = {**READ_ERRORS, 409: "an active task lists the layout (InvalidLayout.InUse)"}


def page_out(page: LayoutPage) -> dict[str, Any]:
    """A page of layouts as the API shows it."""
    return {
        "total_num": page.total,
        "total_page": page.total_pages,
        "layouts": [layout_out(layout) for layout in page.layouts],
    }


@bp.post("/apps/<app_id>/layouts")
@bp.input(CustomLayoutIn, arg_name="body")
@bp.output(CustomLayoutOut, status_code=201)
@bp.doc(summary="Create a custom layout (CreateMPULayout)", security="BasicAuth", responses=WRITE_ERRORS)
def create_layout(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return layout_out(service().create_layout(app_id, body))


@bp.get("/apps/<app_id>/layouts")
@bp.input(LayoutQuery, location="query", arg_name="query")
@bp.output(LayoutListOut)
@bp.doc(
    summary="The app's custom layouts, a page at a time (DescribeMPULayoutInfoList)",
    security="BasicAuth",
    responses={**READ_ERRORS, 400: "Malformed AppId, invalid page or filter"},
)
def list_layouts(app_id: str, query: dict[str, Any]) -> dict[str, Any]:
    return page_out(service().list_layouts(app_id, **query))


@bp.get("/apps/<app_id>/layouts/<int:layout_id>")
@bp.output(CustomLayoutOut)
@bp.doc(
    summary="A layout: a system layout (ids 1-13) or one of the app's custom layouts (100 and up)",
    security="BasicAuth",
    responses=READ_ERRORS,
)
def get_layout(app_id: str, layout_id: int) -> dict[str, Any]:
    return layout_out(service().get_layout(app_id, layout_id))


@bp.patch("/apps/<app_id>/layouts/<int:layout_id>")
@bp.input(CustomLayoutPatchIn, arg_name="body")
@bp.output(CustomLayoutOut)
@bp.doc(
    summary="Change a custom layout (ModifyMPULayout); running tasks keep their copy until their "
    "layout is updated",
    security="BasicAuth",
    responses=WRITE_ERRORS,
)
def modify_layout(app_id: str, layout_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return layout_out(service().modify_layout(app_id, layout_id, body))


@bp.delete("/apps/<app_id>/layouts/<int:layout_id>")
@bp.output({}, status_code=204)
@bp.doc(
    summary="Delete a custom layout (DeleteMPULayout); refused while an active task lists it",
    security="BasicAuth",
    responses=DELETE_ERRORS,
)
def delete_layout(app_id: str, layout_id: int) -> str:
    service().delete_layout(app_id, layout_id)
    return ""

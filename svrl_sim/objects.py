"""The object library: every object a task can use, with the sizes the experts and predicates rely on.

Plain data (no mujoco import), shared by the scene builder, the task registry and the success predicates.
Sizes in metres; z = 0 is the table top.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectSpec:
    """One object of the library. `half` are the half extents of its bounding box in its own frame."""

    name: str
    label: str  # how instructions name it ("red cube")
    shape: str
    movable: bool  # free joint (can be picked / pushed) vs. mocap (fixed by the init state)
    half: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    mass: float = 0.05
    grasp_width: float = 0.0  # gripper opening when holding it (m), for the experts
    footprint: float = 0.0  # radius of the xy disc it occupies, for layout sampling (m)


def _cube(name: str, colour: str, rgba: tuple[float, float, float, float]) -> ObjectSpec:
    return ObjectSpec(name, f"{colour} cube", "cube", True, (0.02, 0.02, 0.02), rgba, 0.05, 0.04, 0.03)


RED = (0.85, 0.12, 0.10, 1.0)
BLUE = (0.15, 0.30, 0.85, 1.0)
YELLOW = (0.95, 0.80, 0.10, 1.0)
OBJECTS: dict[str, ObjectSpec] = {
    o.name: o
    for o in (
        _cube("cube_red", "red", RED),
        _cube("cube_red_b", "red", RED),  # a second, identical red cube for the spatial suite
        _cube("cube_green", "green", (0.15, 0.65, 0.20, 1.0)),
        _cube("cube_blue", "blue", BLUE),
        _cube("cube_yellow", "yellow", YELLOW),
        ObjectSpec(
            "can", "tin can", "can", True, (0.024, 0.024, 0.045), (0.62, 0.64, 0.68, 1.0), 0.08, 0.048, 0.032
        ),
        ObjectSpec(
            "block",
            "purple block",
            "block",
            True,
            (0.015, 0.05, 0.02),
            (0.55, 0.25, 0.70, 1.0),
            0.06,
            0.03,
            0.055,
        ),
        ObjectSpec(
            "carton",
            "milk carton",
            "carton",
            True,
            (0.024, 0.024, 0.05),
            (0.95, 0.95, 0.97, 1.0),
            0.08,
            0.048,
            0.036,
        ),
        ObjectSpec(
            "puck",
            "orange puck",
            "puck",
            True,
            (0.03, 0.03, 0.015),
            (1.0, 0.50, 0.05, 1.0),
            0.05,
            0.06,
            0.035,
        ),
        ObjectSpec(
            "bowl", "bowl", "bowl", False, (0.075, 0.075, 0.025), (0.92, 0.92, 0.88, 1.0), footprint=0.08
        ),
        ObjectSpec(
            "basket", "basket", "basket", False, (0.085, 0.085, 0.03), (0.72, 0.55, 0.32, 1.0), footprint=0.12
        ),
        ObjectSpec(
            "plate", "plate", "plate", False, (0.07, 0.07, 0.005), (0.80, 0.88, 0.95, 1.0), footprint=0.075
        ),
        ObjectSpec(
            "box", "wooden box", "box", False, (0.05, 0.05, 0.03), (0.45, 0.28, 0.14, 1.0), footprint=0.075
        ),
        ObjectSpec(
            "pad", "blue square", "pad", False, (0.05, 0.05, 0.001), (0.20, 0.35, 0.95, 1.0), footprint=0.07
        ),
        ObjectSpec(
            "cabinet", "drawer", "cabinet", False, (0.10, 0.12, 0.07), (0.60, 0.55, 0.50, 1.0), footprint=0.17
        ),
        ObjectSpec(
            "button", "button", "button", False, (0.04, 0.04, 0.025), (0.85, 0.10, 0.10, 1.0), footprint=0.05
        ),
        # Identical copies for the pretraining pool ("which of two blue cubes"). Appended last: the park
        # positions (by index) of every object above stay where they were.
        _cube("cube_blue_b", "blue", BLUE),
        _cube("cube_yellow_b", "yellow", YELLOW),
    )
}

# Geometry constants the success predicates and experts need.
BOWL_INNER_RADIUS = 0.063
BOWL_FLOOR_Z = 0.008
BOWL_RIM_Z = 0.05
BASKET_INNER_HALF = 0.075
BASKET_FLOOR_Z = 0.008
BASKET_RIM_Z = 0.06
PLATE_TOP_Z = 0.01
BOX_TOP_Z = 0.06
PAD_HALF = 0.05
DRAWER_TRAVEL = 0.16  # m
DRAWER_FRONT_X = -0.10  # cabinet frame: the front face (drawer closed)
DRAWER_HANDLE_X = -0.145  # cabinet frame: handle bar centre (drawer closed)
DRAWER_HANDLE_Z = 0.09
DRAWER_FLOOR_Z = 0.016
DRAWER_INNER = (-0.084, 0.084, -0.096, 0.096)  # x0, x1, y0, y1 of the interior, drawer frame
DRAWER_RIM_Z = 0.08
BUTTON_TRAVEL = 0.012
BUTTON_TOP_Z = 0.05  # cap top when not pressed

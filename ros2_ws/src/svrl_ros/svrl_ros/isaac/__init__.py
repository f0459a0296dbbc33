"""The Isaac Sim bridge: `sim_node`'s topics and episode services, with Isaac Sim as the physics and renderer.

- `engine`: ROS-free and Isaac-free. `Engine` is the small interface a physics engine gives the bridge (load a
  scene spec, hold joint targets for one control period, report joints, poses and contacts, render a camera);
  `BridgeEnv` runs svrl_sim's episode rules (reset, step_command, step_chunk, success, reward, horizon) on any
  Engine with the interface `sim_node.SimNode` drives; `MujocoEngine` is the embedded simulator behind that
  interface, so everything but Isaac Sim itself is tested on a CPU.
- `isaac_bridge`: the program run by Isaac Sim's Python. Every Isaac Sim import is inside it (and inside its
  functions, after SimulationApp has started, as Isaac Sim requires); importing it without Isaac Sim works.

See docs/isaac_sim.md for how to run it and what has been verified.
"""

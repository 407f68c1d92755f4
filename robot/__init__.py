"""The policy on a Go2 over Unitree's DDS interface, and a simulated robot on the same topics.

    robot/wire.py        Unitree's messages as bytes (CDR and the CRC's C layout), fast
    robot/sdk.py         topics, header, motor order, JointMap (SDK <-> policy order), message codecs
    robot/dds.py         the DDS bus on one interface (loopback discovery for the simulated robot)
    robot/sim.py         the simulated robot: MuJoCo, motor PD every physics step, LowState_ at 500 Hz
    robot/controller.py  Passive -> Stand -> Walk, the watchdogs, observations and the policy loop
    robot/deploy_cmd.py, robot/sim_cmd.py   the commands go2-deploy and go2-sim-robot
"""

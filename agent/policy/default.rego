# Cocoon's default agent policy. The host may create, run, signal, resize and
# tear down the pod's containers, set up the pod's network (which it controls
# anyway) and copy in the pod's volume files (the agent keeps them under its
# shared directory); it may not run other commands in them
# (ExecProcess), read what they print (ReadStream: their output may carry
# secrets) or replace this policy. A pod that wants any of those ships its
# own policy in initdata (policy.rego). Rules the policy does not define
# are denied.
package agent_policy

default CreateSandboxRequest := true

default DestroySandboxRequest := true

default GuestDetailsRequest := true

default PullImageRequest := true

default CreateContainerRequest := true

default StartContainerRequest := true

default RemoveContainerRequest := true

default WaitProcessRequest := true

default SignalProcessRequest := true

default StatsContainerRequest := true

default PauseContainerRequest := true

default ResumeContainerRequest := true

default WriteStreamRequest := true

default CloseStdinRequest := true

default TtyWinResizeRequest := true

default UpdateContainerRequest := true

default UpdateInterfaceRequest := true

default UpdateRoutesRequest := true

default ListInterfacesRequest := true

default ListRoutesRequest := true

default AddARPNeighborsRequest := true

default OnlineCPUMemRequest := true

default CopyFileRequest := true

default GetOOMEventRequest := true

default ExecProcessRequest := false

# Commands the host may run in the pod's containers (kubectl exec, exec
# probes), each an exact argument vector, in genpolicy's
# policy_data.request_defaults.ExecProcessRequest.allowed_commands: none
# here. A pod whose probes run commands lists them in its own copy of this
# policy (README, "The agent policy").
ExecProcessRequest if {
	some command in policy_data.request_defaults.ExecProcessRequest.allowed_commands
	command == input.process.Args
}
default ReadStreamRequest := false

default SetPolicyRequest := false

# The data the rules read (last, as genpolicy writes it).
policy_data := {"request_defaults": {"ExecProcessRequest": {"allowed_commands": []}}}

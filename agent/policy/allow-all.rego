# Allows every agent request, like Kata's allow-all.rego: for development
# and tests only, never for a confidential workload.
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

default ExecProcessRequest := true

default ReadStreamRequest := true

default TerminationMessageRequest := true

default SetPolicyRequest := true

# Cocoon's default agent policy. The host may create, run, signal and tear
# down the pod's containers; it may not run other commands in them
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

default ExecProcessRequest := false

default ReadStreamRequest := false

default SetPolicyRequest := false

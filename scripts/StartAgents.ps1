<#
.SYNOPSIS
Start kq render agents on this Windows machine that dial back into kq (the seed's interface, kept exactly).

.DESCRIPTION
  StartAgents.ps1 INSTALL_ROOT DATA_ROOT KQ_HOST REQUEST_PORT UPDATE_PORT BROADCAST_PORT NUM_AGENTS

Each agent runs detached as
  node INSTALL_ROOT\bin\kq-agent.js --minimal-env True --request-port P --update-port P --broadcast-port P KQ_HOST
logging to DATA_ROOT\logs\remote_agent_<n>.log (stdout to remote_agent_<n>.out.log), its pid in
DATA_ROOT\run\remote_agent_<n>.pid (StopAgents.ps1 DATA_ROOT stops exactly those). Slots whose agent still
runs are left alone.

Detached: the agent is created through WMI (Win32_Process.Create), the Windows counterpart of setsid, so it
is not in the job object of an SSH session (Windows OpenSSH kills a session's processes when it ends).
Its command line goes through cmd.exe only for the log redirection; every value is double-quoted, and
values that cmd.exe could expand (% and ") are refused. Nothing in an argument is ever evaluated.

Before starting, it checks what the seed's troubleshooting list asked people to check by hand: the data
root is writable, KQ_HOST resolves here, and kq's ports accept connections from here.

Exit codes: 0 started; 2 bad arguments, no kq install or no node; 3 data root not writable;
  4 KQ_HOST does not resolve on this machine; 5 kq's ports are not reachable from this machine;
  6 an agent did not start or exited at once.
Environment: KQ_NODE (node.exe to run; default: node on PATH), KQ_SKIP_CHECKS=1 (skip the name and port checks),
KQ_SERVER_KEY and KQ_KEY_FILE (when kq requires CURVE: kq's public certificate file and this machine's secret
certificate). A process made by Win32_Process.Create does not inherit this environment, so on Windows these
two reach the agents as --server-key FILE --key-file FILE (paths only, never key material, on the command line).
#>

$ErrorActionPreference = 'Stop'
$Prog = 'StartAgents.ps1'

function Write-Usage {
  [Console]::Error.WriteLine(@'
usage: StartAgents.ps1 INSTALL_ROOT DATA_ROOT KQ_HOST REQUEST_PORT UPDATE_PORT BROADCAST_PORT NUM_AGENTS
  INSTALL_ROOT    kq installed on this machine: a checkout with bin\kq-agent.js and dist\ built
  DATA_ROOT       where logs\remote_agent_<n>.log and run\remote_agent_<n>.pid go (created if missing)
  KQ_HOST         address or name of the machine running kq, as this machine reaches it
  REQUEST_PORT, UPDATE_PORT, BROADCAST_PORT   kq's ports (see kq.json in kq's data root)
  NUM_AGENTS      how many agents to start (1-256)
example: StartAgents.ps1 C:\kq D:\kq-data render-master 5560 5561 5562 4
'@)
}

function Stop-WithError([int]$Code, [string]$Message) {
  [Console]::Error.WriteLine("${Prog}: $Message")
  exit $Code
}

function Stop-WithUsage([string]$Message) {
  [Console]::Error.WriteLine("${Prog}: $Message")
  Write-Usage
  exit 2
}

function Test-WholeNumber([string]$Value, [int]$Min, [int]$Max) {
  if ($Value -notmatch '^[0-9]{1,6}$') { return $false }
  $n = [int]$Value
  return ($n -ge $Min -and $n -le $Max)
}

# An absolute path; relative ones are relative to the current location (not .NET's current directory).
function Get-AbsolutePath([string]$Path) {
  if ([System.IO.Path]::IsPathRooted($Path)) { return [System.IO.Path]::GetFullPath($Path) }
  return [System.IO.Path]::GetFullPath((Join-Path -Path (Get-Location).ProviderPath -ChildPath $Path))
}

# Is this pid a running kq agent? (a recycled pid running something else is not)
# Exactly kq-agent's command line (as in StopAgents.ps1): a node executable, then kq-agent.js as its first argument.
$KqAgentCommandLine = '^\s*"?(?:[^"]*[\\/])?node(?:js)?(?:\.exe)?"?\s+"?(?:[^"]*[\\/])?kq-agent(?:\.js)?"?(?:\s|$)'

function Test-KqAgent([string]$ProcessId) {
  if ($ProcessId -notmatch '^[0-9]+$') { return $false }
  $p = Get-CimInstance -ClassName Win32_Process -Filter "ProcessId = $ProcessId" -ErrorAction SilentlyContinue
  return ($null -ne $p -and $null -ne $p.CommandLine -and $p.CommandLine -match $KqAgentCommandLine)
}

# cmd.exe expands %VAR% even inside double quotes, and a " would end the quoting: refuse both.
function Assert-CmdSafe([string]$Name, [string]$Value) {
  if ($Value -match '[%"]') { Stop-WithUsage "$Name must not contain % or "" characters, got ""$Value""" }
}

# The seed indexed $args off by one; the seven arguments are $args[0] .. $args[6].
if ($args.Count -ne 7) { Stop-WithUsage "expected 7 arguments, got $($args.Count)" }
$InstallRoot = [string]$args[0]
$DataRoot = [string]$args[1]
$KqHost = [string]$args[2]
$RequestPort = [string]$args[3]
$UpdatePort = [string]$args[4]
$BroadcastPort = [string]$args[5]
$NumAgents = [string]$args[6]
$ThisHost = [System.Net.Dns]::GetHostName()

foreach ($pair in @(@('REQUEST_PORT', $RequestPort), @('UPDATE_PORT', $UpdatePort), @('BROADCAST_PORT', $BroadcastPort))) {
  if (-not (Test-WholeNumber $pair[1] 1 65535)) { Stop-WithUsage "$($pair[0]) must be a port number from 1 to 65535, got ""$($pair[1])""" }
}
if (-not (Test-WholeNumber $NumAgents 1 256)) { Stop-WithUsage "NUM_AGENTS must be a whole number from 1 to 256, got ""$NumAgents""" }
if ($KqHost -eq '' -or $KqHost.StartsWith('-') -or $KqHost -notmatch '^[A-Za-z0-9._:-]+$') {
  Stop-WithUsage "KQ_HOST must be a host name or address (letters, digits, . - :), got ""$KqHost"""
}
if ($InstallRoot -eq '') { Stop-WithUsage 'INSTALL_ROOT is empty' }
if ($DataRoot -eq '') { Stop-WithUsage 'DATA_ROOT is empty' }
Assert-CmdSafe 'INSTALL_ROOT' $InstallRoot
Assert-CmdSafe 'DATA_ROOT' $DataRoot

$InstallRoot = Get-AbsolutePath $InstallRoot
$DataRoot = Get-AbsolutePath $DataRoot
$AgentJs = Join-Path $InstallRoot 'bin\kq-agent.js'

if (-not (Test-Path -LiteralPath $InstallRoot -PathType Container)) { Stop-WithUsage "INSTALL_ROOT $InstallRoot does not exist on $ThisHost" }
if (-not (Test-Path -LiteralPath $AgentJs -PathType Leaf)) { Stop-WithUsage "INSTALL_ROOT $InstallRoot is not a kq install: $AgentJs is missing" }
if (-not (Test-Path -LiteralPath (Join-Path $InstallRoot 'dist\src\agent\main.js') -PathType Leaf)) {
  Stop-WithError 2 "kq in $InstallRoot is not built (no dist\src\agent\main.js): run 'npm ci; npx tsc -p .' there"
}
$NodeName = if ($env:KQ_NODE) { $env:KQ_NODE } else { 'node' }
$NodeCommand = Get-Command -Name $NodeName -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
if ($null -eq $NodeCommand) { Stop-WithError 2 "cannot find node ('$NodeName') on $ThisHost`: install Node.js 20 or later, or set KQ_NODE to node.exe" }
$Node = $NodeCommand.Source
Assert-CmdSafe 'the node path' $Node
$NodeVersion = (& $Node --version) 2>$null
if ($NodeVersion -notmatch '^v([0-9]+)\.' -or [int]$Matches[1] -lt 20) { Stop-WithError 2 "node $NodeVersion at $Node is too old: kq-agent needs Node.js 20 or later" }

# Data root: created if missing, and must be writable by this user.
$Who = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name
$Logs = Join-Path $DataRoot 'logs'
$Run = Join-Path $DataRoot 'run'
try {
  [void][System.IO.Directory]::CreateDirectory($Logs)
  [void][System.IO.Directory]::CreateDirectory($Run)
  foreach ($dir in @($Logs, $Run)) {
    $probe = Join-Path $dir ".write-test.$PID"
    [System.IO.File]::WriteAllText($probe, '')
    [System.IO.File]::Delete($probe)
  }
} catch {
  Stop-WithError 3 "data root $DataRoot is not writable by $Who on $ThisHost ($($_.Exception.Message)): give $Who write access to it (and its logs and run folders), or choose another DATA_ROOT"
}

# CURVE keys for the agents: both or neither, certificate files (a Z85 key could hold % or other characters
# cmd.exe would interpret).
$CurveArgs = @()
if ($env:KQ_SERVER_KEY -or $env:KQ_KEY_FILE) {
  if (-not ($env:KQ_SERVER_KEY -and $env:KQ_KEY_FILE)) { Stop-WithError 2 "KQ_SERVER_KEY and KQ_KEY_FILE go together (kq's public certificate, and this machine's secret certificate)" }
  $serverKeyFile = Get-AbsolutePath $env:KQ_SERVER_KEY
  $keyFile = Get-AbsolutePath $env:KQ_KEY_FILE
  foreach ($f in @($serverKeyFile, $keyFile)) {
    if (-not (Test-Path -LiteralPath $f -PathType Leaf)) { Stop-WithError 2 "CURVE certificate $f does not exist on $ThisHost (KQ_SERVER_KEY and KQ_KEY_FILE are files here)" }
    Assert-CmdSafe 'a CURVE certificate path' $f
  }
  $CurveArgs = @('--server-key', $serverKeyFile, '--key-file', $keyFile)
}

# The seed's troubleshooting list: can this machine resolve KQ_HOST and open TCP connections to kq's ports?
if ($env:KQ_SKIP_CHECKS -ne '1') {
  try {
    $addresses = [System.Net.Dns]::GetHostAddresses($KqHost)
  } catch {
    Stop-WithError 4 "cannot resolve the kq host ""$KqHost"" on $ThisHost ($($_.Exception.Message)): pass an IP address, or a name this machine resolves (check DNS or C:\Windows\System32\drivers\etc\hosts here)"
  }
  $bad = @()
  foreach ($port in @($RequestPort, $UpdatePort, $BroadcastPort)) {
    $client = New-Object System.Net.Sockets.TcpClient
    try {
      $task = $client.ConnectAsync($KqHost, [int]$port)
      if (-not $task.Wait(3000)) { $bad += "$port (no answer in 3s)" }
    } catch {
      $inner = $_.Exception
      while ($null -ne $inner.InnerException) { $inner = $inner.InnerException }
      $bad += "$port ($($inner.Message))"
    } finally {
      $client.Dispose()
    }
  }
  if ($bad.Count -gt 0) {
    Stop-WithError 5 ("cannot connect from $ThisHost to kq at $KqHost [$($addresses -join ', ')] on port(s) $($bad -join ', '): " +
      'is kq running, and listening on an address this machine can reach (kq --bind 0.0.0.0, or --bind <its address>)? ' +
      "a firewall must let TCP ports $RequestPort, $UpdatePort, $BroadcastPort through from $ThisHost to the kq machine")
  }
}

Write-Output "starting $NumAgents kq agent(s) on $ThisHost for kq at $KqHost (ports $RequestPort, $UpdatePort, $BroadcastPort)"

$launched = @()
$started = 0
$n = 0
while ($started -lt [int]$NumAgents) {
  $n++
  $pidFile = Join-Path $Run "remote_agent_$n.pid"
  $log = Join-Path $Logs "remote_agent_$n.log"
  $outLog = Join-Path $Logs "remote_agent_$n.out.log"
  if (Test-Path -LiteralPath $pidFile) {
    $old = ([System.IO.File]::ReadAllText($pidFile)).Trim()
    if (Test-KqAgent $old) {
      Write-Output "kq agent $n is already running (pid $old): left alone"
      continue
    }
    Remove-Item -LiteralPath $pidFile -Force
  }
  # Every value double-quoted; validated above to hold no % or ". /d: no AutoRun, /v:off: no !VAR! expansion,
  # /s: strip only the outer quotes.
  $agentArgs = @($AgentJs, '--minimal-env', 'True', '--request-port', $RequestPort, '--update-port', $UpdatePort,
    '--broadcast-port', $BroadcastPort) + $CurveArgs + @($KqHost)
  $quoted = ($agentArgs | ForEach-Object { '"' + $_ + '"' }) -join ' '
  $commandLine = "cmd.exe /d /v:off /s /c "" ""$Node"" $quoted 1>>""$outLog"" 2>>""$log"" """
  $result = Invoke-CimMethod -ClassName Win32_Process -MethodName Create -Arguments @{ CommandLine = $commandLine; CurrentDirectory = $DataRoot }
  if ($result.ReturnValue -ne 0) { Stop-WithError 6 "Win32_Process.Create could not start kq agent $n (code $($result.ReturnValue))" }
  $launched += , @($n, $result.ProcessId, $pidFile, $log)
  $started++
}

# Find each agent (node.exe, child of its cmd.exe), record its pid, then give them a moment: an agent that
# cannot load (bad install, wrong node) exits at once.
$agents = @()
foreach ($entry in $launched) {
  $n, $cmdPid, $pidFile, $log = $entry
  $agentPid = $null
  for ($i = 0; $i -lt 100 -and $null -eq $agentPid; $i++) {
    $child = Get-CimInstance -ClassName Win32_Process -Filter "ParentProcessId = $cmdPid" -ErrorAction SilentlyContinue |
      Where-Object { $_.CommandLine -like '*kq-agent*' } | Select-Object -First 1
    if ($null -ne $child) { $agentPid = $child.ProcessId } else { Start-Sleep -Milliseconds 50 }
  }
  if ($null -ne $agentPid) { [System.IO.File]::WriteAllText($pidFile, "$agentPid`n") }
  $agents += , @($n, $agentPid, $pidFile, $log)
}
Start-Sleep -Milliseconds 500

$failed = 0
foreach ($entry in $agents) {
  $n, $agentPid, $pidFile, $log = $entry
  if ($null -ne $agentPid -and (Test-KqAgent ([string]$agentPid))) {
    Write-Output "started kq agent ${n}: pid $agentPid, log $log"
  } else {
    $failed++
    Remove-Item -LiteralPath $pidFile -Force -ErrorAction SilentlyContinue
    [Console]::Error.WriteLine("${Prog}: kq agent $n exited at once; the end of ${log}:")
    if (Test-Path -LiteralPath $log) { Get-Content -LiteralPath $log -Tail 15 | ForEach-Object { [Console]::Error.WriteLine("  | $_") } }
  }
}
if ($failed -gt 0) { Stop-WithError 6 "$failed of $NumAgents kq agent(s) did not start on $ThisHost (is $InstallRoot built for this machine's node, $NodeVersion?)" }
exit 0

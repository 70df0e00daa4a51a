<#
.SYNOPSIS
Stop kq agents on this machine: every kq agent of this user, or those StartAgents.ps1 started with a data root.

.DESCRIPTION
  StopAgents.ps1                            every kq agent of this user on this machine (as the seed's did)
  StopAgents.ps1 DATA_ROOT [GRACE_SECONDS]  the agents StartAgents.ps1 started with this data root

A kq agent is a process whose command line is exactly kq-agent's: node.exe running kq-agent.js. Nothing else
is touched, however it is named. With DATA_ROOT, only processes named in DATA_ROOT\run\remote_agent_<n>.pid
that are kq agents (a pid file whose pid now belongs to something else is removed, that process left alone). Each is asked to
stop (taskkill /T); one still running after GRACE_SECONDS (default 10) is ended with its whole process tree,
renders included (taskkill /T /F). Windows console programs rarely honour the polite request: kq requeues
the task of an agent that went away. Nothing running is fine (exit 0).
Exit codes: 0 done (or nothing to stop), 1 an agent could not be stopped, 2 bad arguments.
#>

$ErrorActionPreference = 'Stop'
$Prog = 'StopAgents.ps1'

function Stop-WithUsage([string]$Message) {
  [Console]::Error.WriteLine("${Prog}: $Message")
  [Console]::Error.WriteLine(@'
usage: StopAgents.ps1 [DATA_ROOT [GRACE_SECONDS]]
  (none)          stop every kq agent of this user on this machine
  DATA_ROOT       the data root given to StartAgents.ps1 (its run\remote_agent_<n>.pid files)
  GRACE_SECONDS   time between the request to stop and the forced end (default 10, 0-3600)
'@)
  exit 2
}

# Exactly kq-agent's command line: a node executable, then kq-agent.js (or the kq-agent link) as its first argument.
$KqAgentCommandLine = '^\s*"?(?:[^"]*[\\/])?node(?:js)?(?:\.exe)?"?\s+"?(?:[^"]*[\\/])?kq-agent(?:\.js)?"?(?:\s|$)'

function Test-KqAgentProcess($p) {
  return ($null -ne $p -and $null -ne $p.CommandLine -and $p.CommandLine -match $KqAgentCommandLine)
}

function Test-KqAgent([string]$ProcessId) {
  if ($ProcessId -notmatch '^[0-9]+$') { return $false }
  return Test-KqAgentProcess (Get-CimInstance -ClassName Win32_Process -Filter "ProcessId = $ProcessId" -ErrorAction SilentlyContinue)
}

# This user's kq agents (process ids).
function Get-MyKqAgents {
  $me = [Environment]::UserName
  $myDomain = [Environment]::UserDomainName
  foreach ($p in Get-CimInstance -ClassName Win32_Process -Filter "Name LIKE 'node%'" -ErrorAction SilentlyContinue) {
    if (-not (Test-KqAgentProcess $p)) { continue }
    $owner = Invoke-CimMethod -InputObject $p -MethodName GetOwner -ErrorAction SilentlyContinue
    if ($null -ne $owner -and $owner.User -eq $me -and $owner.Domain -eq $myDomain) { [string]$p.ProcessId }
  }
}

# The arguments are $args[0] (DATA_ROOT, optional) and $args[1] (GRACE_SECONDS, optional).
if ($args.Count -gt 2) { Stop-WithUsage "expected no arguments, or DATA_ROOT and an optional GRACE_SECONDS, got $($args.Count) arguments" }
$AllOfMine = ($args.Count -eq 0)
$DataRoot = if ($AllOfMine) { '' } else { [string]$args[0] }
$Grace = if ($args.Count -eq 2) { [string]$args[1] } else { '10' }
if (-not $AllOfMine -and $DataRoot -eq '') { Stop-WithUsage 'DATA_ROOT is empty' }
if ($Grace -notmatch '^[0-9]{1,4}$' -or [int]$Grace -gt 3600) { Stop-WithUsage "GRACE_SECONDS must be a whole number of seconds up to 3600, got ""$Grace""" }
$ThisHost = [System.Net.Dns]::GetHostName()
$status = 0
$signalled = @()

if ($AllOfMine) {
  foreach ($agentPid in @(Get-MyKqAgents)) {
    & taskkill.exe /PID $agentPid /T 2>&1 | Out-Null
    $signalled += , @('-', $agentPid, $null)
  }
  if ($signalled.Count -eq 0) {
    Write-Output "no kq agents of $([Environment]::UserName) running on $ThisHost"
    exit 0
  }
} else {
  $Run = Join-Path $DataRoot 'run'

  if (-not (Test-Path -LiteralPath $Run -PathType Container)) {
    Write-Output "no kq agents recorded in $Run on ${ThisHost}: nothing to stop"
    exit 0
  }

  foreach ($file in Get-ChildItem -LiteralPath $Run -Filter 'remote_agent_*.pid' -File) {
    $n = $file.BaseName.Substring('remote_agent_'.Length)
    $agentPid = ([System.IO.File]::ReadAllText($file.FullName)).Trim()
    if (-not (Test-KqAgent $agentPid)) {
      Write-Output "kq agent $n (pid $agentPid) is not running: removed its pid file"
      Remove-Item -LiteralPath $file.FullName -Force
      continue
    }
    & taskkill.exe /PID $agentPid /T 2>&1 | Out-Null
    $signalled += , @($n, $agentPid, $file.FullName)
  }

  if ($signalled.Count -eq 0) {
    Write-Output "no kq agents running from $DataRoot on $ThisHost"
    exit 0
  }
}

$deadline = (Get-Date).AddSeconds([int]$Grace)
while ((Get-Date) -lt $deadline) {
  $alive = @($signalled | Where-Object { Test-KqAgent ([string]$_[1]) })
  if ($alive.Count -eq 0) { break }
  Start-Sleep -Milliseconds 100
}

$count = 0
foreach ($entry in $signalled) {
  $n, $agentPid, $pidFile = $entry
  $label = if ($n -eq '-') { "(pid $agentPid)" } else { "$n (pid $agentPid)" }
  if (Test-KqAgent $agentPid) {
    & taskkill.exe /PID $agentPid /T /F 2>&1 | Out-Null
    Start-Sleep -Milliseconds 200
    if (Test-KqAgent $agentPid) {
      [Console]::Error.WriteLine("${Prog}: cannot stop kq agent $label as $([Environment]::UserName): not ours?")
      $status = 1
      continue
    }
    Write-Output "kq agent $label did not stop within ${Grace}s: ended it and its renders (taskkill /F)"
  } else {
    Write-Output "stopped kq agent $label"
  }
  if ($null -ne $pidFile) { Remove-Item -LiteralPath $pidFile -Force -ErrorAction SilentlyContinue }
  $count++
}
Write-Output "stopped $count kq agent(s) on $ThisHost"
exit $status

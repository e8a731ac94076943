--[[
bnmusic: render the selected track's stem, blend it into music, bring the music back.

What it does
  1. Renders the selected track as a stem (Reaper's render-settings API: stems of the
     selected track, custom bounds = the extent of its items, WAV) into STEM_DIR, and
     puts your render settings back afterwards.
  2. Sends the stem's path to `bnmusic serve` over OSC (/bnmusic/render_ex) and waits
     for /bnmusic/done without freezing Reaper (reaper.defer), printing progress.
  3. Imports the music stem on a new track under the source track, at the stem's start.
  4. Writes the lambda lane (the CSV lane, time_s,gain_db,gain_linear) as that track's
     volume envelope. Gain above ENVELOPE_MAX_DB goes into the item's volume, so the
     envelope never clips at Reaper's volume-envelope ceiling.

Install (one file)
  * Copy this file into Reaper's Scripts folder (Options > Show REAPER resource path,
    then Scripts/), then Actions > Show action list > New action > Load ReaScript...,
    and pick it. Nothing else from the repository is needed.
  * bnmusic-bridge on this machine (pip install bnmusic-bridge, or pip install -e . in a
    checkout), and the server started with the project folder as a root, e.g.:
        bnmusic serve --root "/path/to/your/reaper/project"
    (STEM_DIR below must lie inside a --root; the default is <project media folder>/bnmusic.)
  * OSC from Lua: with LuaSocket (ReaPack > import the "Mavriq ReaScript Repository",
    install "Mavriq Lua Sockets"; looked for under <resource path>/Scripts/Mavriq
    ReaScript Repository/Various/) the script speaks OSC itself. Without it, it writes a
    small OSC client that uses only Python's standard library (embedded below, no
    python-osc) next to the stem and runs it with PYTHON (the Python bnmusic-bridge
    is installed in will do).

Run
  Select one track with the noise items on it and run the action. The View > Console
  shows progress; the new track is named "bnmusic music".

Status: run in Lua 5.4 against a mock of the ReaScript API and the real server, over
LuaSocket and over the embedded Python fallback (tests/test_osc_server.py; needs pip
install lupa); the OSC encoders of both are checked against liblo's oscdump
(tests/test_reaper.py).
The Reaper calls follow the ReaScript API documentation (Reaper 6/7); the author had no
Reaper to run it in.
--]]

-- ==== settings ======================================================================
local HOST = "127.0.0.1"
local PORT = 9750                      -- bnmusic serve --port (default 9750)
local STEM_DIR = nil                   -- nil: <project media folder>/bnmusic
local OUT_DIR = ""                     -- "" : outputs next to the stem
local PRESET = ""                      -- "" : the server's preset (see /bnmusic/presets)
local PROMPT = ""                      -- "" : the preset's prompt
local ENVELOPE_MAX_DB = 6.0            -- Reaper's default volume-envelope ceiling (+6 dB)
local IMPORT_BLENDED_INSTEAD = false   -- true: import the already-gained stem, no envelope
local TIMEOUT_S = 1800
local PYTHON = (reaper.GetOS():match("Win") and "python" or "python3")
-- ====================================================================================

local function log(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring(select(i, ...)) end
  reaper.ShowConsoleMsg(table.concat(parts, " ") .. "\n")
end

local function fail(message)
  reaper.ShowMessageBox(message, "bnmusic", 0)
end


-- ---- OSC encoding and decoding (only what the server sends: i h f d s S T F N, bundles)
local function osc_string(s)
  local n = #s + 1
  return s .. "\0" .. string.rep("\0", (4 - n % 4) % 4)
end

local function osc_message(address, ...)
  local tags, data = { "," }, {}
  for _, v in ipairs({ ... }) do
    if math.type(v) == "integer" then
      tags[#tags + 1] = "i"; data[#data + 1] = string.pack(">i4", v)
    elseif type(v) == "number" then
      tags[#tags + 1] = "f"; data[#data + 1] = string.pack(">f", v)
    elseif type(v) == "boolean" then
      tags[#tags + 1] = v and "T" or "F"
    else
      tags[#tags + 1] = "s"; data[#data + 1] = osc_string(tostring(v))
    end
  end
  return osc_string(address) .. osc_string(table.concat(tags)) .. table.concat(data)
end

local function read_string(data, pos)
  local zero = data:find("\0", pos, true)
  local s = data:sub(pos, zero - 1)
  local n = zero - pos + 1
  return s, pos + n + (4 - n % 4) % 4
end

-- Appends {address=..., args={...}} for every message in a packet (bundles unpacked;
-- their time tags are ignored: lane points carry their time as an argument).
local function osc_decode(data, out)
  if data:sub(1, 8) == "#bundle\0" then
    local pos = 17
    while pos + 3 <= #data do
      local size = string.unpack(">i4", data, pos)
      osc_decode(data:sub(pos + 4, pos + 3 + size), out)
      pos = pos + 4 + size
    end
    return out
  end
  local address, pos = read_string(data, 1)
  local tags = ","
  if pos <= #data then tags, pos = read_string(data, pos) end
  local args = {}
  for i = 2, #tags do
    local t = tags:sub(i, i)
    local v
    if t == "i" then v, pos = string.unpack(">i4", data, pos)
    elseif t == "h" then v, pos = string.unpack(">i8", data, pos)
    elseif t == "f" then v, pos = string.unpack(">f", data, pos)
    elseif t == "d" then v, pos = string.unpack(">d", data, pos)
    elseif t == "s" or t == "S" then v, pos = read_string(data, pos)
    elseif t == "T" then v = true
    elseif t == "F" then v = false
    else v = false end -- N (nil) and anything else: a placeholder keeps positions
    args[#args + 1] = v
  end
  out[#out + 1] = { address = address, args = args }
  return out
end

-- ---- rendering the selected track's stem with the render-settings API ---------------
local NUM_SETTINGS = { "RENDER_SETTINGS", "RENDER_BOUNDSFLAG", "RENDER_STARTPOS", "RENDER_ENDPOS",
                       "RENDER_TAILFLAG", "RENDER_ADDTOPROJ" }
local STR_SETTINGS = { "RENDER_FILE", "RENDER_PATTERN", "RENDER_FORMAT" }

local function render_stem(track)
  local n = reaper.CountTrackMediaItems(track)
  if n == 0 then return nil, "the selected track has no items to render" end
  local start_s, end_s = math.huge, -math.huge
  for i = 0, n - 1 do
    local item = reaper.GetTrackMediaItem(track, i)
    local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    start_s = math.min(start_s, pos)
    end_s = math.max(end_s, pos + reaper.GetMediaItemInfo_Value(item, "D_LENGTH"))
  end
  local dir = STEM_DIR or (reaper.GetProjectPath("") .. "/bnmusic")
  reaper.RecursiveCreateDirectory(dir, 0)
  local saved_num, saved_str = {}, {}
  for _, k in ipairs(NUM_SETTINGS) do saved_num[k] = reaper.GetSetProjectInfo(0, k, 0, false) end
  for _, k in ipairs(STR_SETTINGS) do
    local _, v = reaper.GetSetProjectInfo_String(0, k, "", false); saved_str[k] = v
  end
  local pattern = string.format("noise_%d_$track", os.time())
  reaper.GetSetProjectInfo(0, "RENDER_SETTINGS", 2, true)      -- stems (selected tracks) only
  reaper.GetSetProjectInfo(0, "RENDER_BOUNDSFLAG", 0, true)    -- custom time bounds
  reaper.GetSetProjectInfo(0, "RENDER_STARTPOS", start_s, true)
  reaper.GetSetProjectInfo(0, "RENDER_ENDPOS", end_s, true)
  reaper.GetSetProjectInfo(0, "RENDER_TAILFLAG", 0, true)
  reaper.GetSetProjectInfo(0, "RENDER_ADDTOPROJ", 0, true)
  reaper.GetSetProjectInfo_String(0, "RENDER_FILE", dir, true)
  reaper.GetSetProjectInfo_String(0, "RENDER_PATTERN", pattern, true)
  reaper.GetSetProjectInfo_String(0, "RENDER_FORMAT", "evaw", true) -- WAV, default options
  local _, targets = reaper.GetSetProjectInfo_String(0, "RENDER_TARGETS", "", false)
  reaper.Main_OnCommand(42230, 0) -- Render project, most recent settings, auto-close dialog
  for k, v in pairs(saved_num) do reaper.GetSetProjectInfo(0, k, v, true) end
  for k, v in pairs(saved_str) do reaper.GetSetProjectInfo_String(0, k, v, true) end
  local path = targets:match("^([^;]+)")
  if not path or not reaper.file_exists(path) then
    return nil, "the render produced no file (targets: " .. tostring(targets) .. ")"
  end
  return path, nil, start_s, end_s
end

-- ---- bringing the result into the project -------------------------------------------
local function read_lane_csv(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local points = {}
  for line in f:lines() do
    local t, db, lin = line:match("^([%d%.%-eE+]+),([%d%.%-eE+]+),([%d%.%-eE+]+)")
    if t then points[#points + 1] = { t = tonumber(t), db = tonumber(db), linear = tonumber(lin) } end
  end
  f:close()
  return points
end

local function import_result(src_track, stem_start_s, result, osc_lane)
  reaper.Undo_BeginBlock()
  reaper.PreventUIRefresh(1)
  local index = math.floor(reaper.GetMediaTrackInfo_Value(src_track, "IP_TRACKNUMBER")) -- 1-based
  reaper.InsertTrackAtIndex(index, true) -- right under the source track
  local track = reaper.GetTrack(0, index)
  reaper.GetSetMediaTrackInfo_String(track, "P_NAME", "bnmusic music", true)
  reaper.SetOnlyTrackSelected(track)
  local cursor = reaper.GetCursorPosition()
  reaper.SetEditCurPos(stem_start_s, false, false)
  reaper.InsertMedia(IMPORT_BLENDED_INSTEAD and result.blended or result.music, 0)
  reaper.SetEditCurPos(cursor, false, false)
  local item = reaper.GetTrackMediaItem(track, reaper.CountTrackMediaItems(track) - 1)
  local points = 0
  if not IMPORT_BLENDED_INSTEAD then
    local lane = read_lane_csv(result.lambda_csv) or osc_lane
    local env = reaper.GetTrackEnvelopeByName(track, "Volume")
    if not env then
      reaper.Main_OnCommand(40406, 0) -- Track: Toggle track volume envelope visible
      env = reaper.GetTrackEnvelopeByName(track, "Volume")
    end
    if env and lane and #lane > 0 then
      local max_db = -math.huge
      for _, p in ipairs(lane) do max_db = math.max(max_db, p.db) end
      -- The part of the gain above the envelope's ceiling goes into the item volume.
      local offset_db = math.max(0, max_db - ENVELOPE_MAX_DB)
      if item and offset_db > 0 then
        reaper.SetMediaItemInfo_Value(item, "D_VOL", 10 ^ (offset_db / 20))
      end
      local mode = reaper.GetEnvelopeScalingMode(env)
      local last = lane[#lane].t
      reaper.DeleteEnvelopePointRange(env, stem_start_s - 0.001, stem_start_s + last + 0.001)
      for _, p in ipairs(lane) do
        local linear = 10 ^ ((p.db - offset_db) / 20)
        reaper.InsertEnvelopePoint(env, stem_start_s + p.t, reaper.ScaleToEnvelopeMode(mode, linear), 0, 0, false, true)
        points = points + 1
      end
      reaper.Envelope_SortPoints(env)
    end
  end
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.TrackList_AdjustWindows(false)
  reaper.Undo_EndBlock("bnmusic: import music and lambda lane", -1)
  log(string.format("bnmusic: imported %s and %d envelope points (coverage %.1f %%, lambda %+.1f..%+.1f dB)",
    IMPORT_BLENDED_INSTEAD and result.blended or result.music, points, (result.coverage or 0) * 100,
    result.lambda_min_db or 0, result.lambda_max_db or 0))
end

-- ---- talking to the server -----------------------------------------------------------
local function load_socket()
  local base = reaper.GetResourcePath() .. "/Scripts/Mavriq ReaScript Repository/Various/Mavriq-Lua-Sockets/"
  package.cpath = package.cpath .. ";" .. base .. "?.dll;" .. base .. "?.so"
  package.path = package.path .. ";" .. base .. "?.lua"
  local ok, socket = pcall(require, "socket")
  if ok then return socket end
  return nil
end

local DONE_FIELDS = { "music", "blended", "lambda_csv", "lambda_json", "report" }

local function wait_with_luasocket(socket, job, stem, on_done)
  local udp = socket.udp()
  udp:settimeout(0)
  udp:setpeername(HOST, PORT)
  local args = { job, stem, OUT_DIR }
  if PRESET ~= "" then args[#args + 1] = "preset"; args[#args + 1] = PRESET end
  if PROMPT ~= "" then args[#args + 1] = "prompt"; args[#args + 1] = PROMPT end
  udp:send(osc_message("/bnmusic/render_ex", table.unpack(args)))
  local deadline = reaper.time_precise() + TIMEOUT_S
  local acked, lane, last_stage = false, {}, ""
  local function poll()
    while true do
      local data = udp:receive()
      if not data then break end
      for _, m in ipairs(osc_decode(data, {})) do
        local a = m.args
        if m.address == "/bnmusic/error" and (a[1] == job or not acked) then
          udp:close()
          fail("bnmusic: " .. tostring(a[2]) .. ": " .. tostring(a[3]))
          return
        elseif a[1] == job then
          if m.address == "/bnmusic/ack" then
            acked = true; log("bnmusic: queued " .. job)
          elseif m.address == "/bnmusic/progress" and a[2] ~= last_stage then
            last_stage = a[2]; log("bnmusic: " .. a[2])
          elseif m.address == "/bnmusic/lane" then
            lane[#lane + 1] = { t = a[2], db = a[3] }
          elseif m.address == "/bnmusic/done" then
            udp:close()
            local result = {}
            for i, k in ipairs(DONE_FIELDS) do result[k] = a[i + 1] end
            result.coverage, result.nmr_db, result.lambda_min_db, result.lambda_max_db = a[7], a[8], a[9], a[10]
            on_done(result, lane)
            return
          end
        end
      end
    end
    if reaper.time_precise() > deadline then
      udp:close()
      fail(acked and "bnmusic: no result in time; the job may still run (see /bnmusic/status)"
        or "bnmusic: no answer from the server at " .. HOST .. ":" .. PORT .. "; is `bnmusic serve` running?")
      return
    end
    reaper.defer(poll)
  end
  poll()
end

-- A minimal OSC client in Python's standard library only (no python-osc): sends
-- /bnmusic/render_ex and waits for the job's /bnmusic/done or /bnmusic/error, then
-- writes the result as key<TAB>value lines. argv: host port job stem out timeout_s
-- result_file [key value]...
local PY_CLIENT = [==[
import os, socket, struct, sys, time

DONE = ("music", "blended", "lambda_csv", "lambda_json", "report")


def osc_string(text):
    b = text.encode("utf-8") + b"\0"
    return b + b"\0" * (-len(b) % 4)


def osc_message(address, *args):
    tags, data = ",", b""
    for v in args:
        if isinstance(v, bool):
            tags += "T" if v else "F"
        elif isinstance(v, int):
            tags, data = tags + "i", data + struct.pack(">i", v)
        elif isinstance(v, float):
            tags, data = tags + "f", data + struct.pack(">f", v)
        else:
            tags, data = tags + "s", data + osc_string(str(v))
    return osc_string(address) + osc_string(tags) + data


def read_string(data, pos):
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8", "replace"), (end + 4) & ~3


def osc_decode(data, out):
    if data[:8] == b"#bundle\0":
        pos = 16
        while pos + 4 <= len(data):
            (size,) = struct.unpack(">i", data[pos : pos + 4])
            osc_decode(data[pos + 4 : pos + 4 + size], out)
            pos += 4 + size
        return out
    address, pos = read_string(data, 0)
    tags, args = ",", []
    if pos < len(data):
        tags, pos = read_string(data, pos)
    for t in tags[1:]:
        if t in "if":
            (v,) = struct.unpack(">" + t, data[pos : pos + 4]); pos += 4
        elif t in "hd":
            (v,) = struct.unpack(">" + ("q" if t == "h" else "d"), data[pos : pos + 8]); pos += 8
        elif t in "sS":
            v, pos = read_string(data, pos)
        else:
            v = {"T": True, "F": False}.get(t)
        args.append(v)
    out.append((address, args))
    return out


def main(argv):
    host, port, job, stem, out, timeout_s, result_file = argv[:7]
    pairs = argv[7:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.connect((host, int(port)))
    sock.send(osc_message("/bnmusic/render_ex", job, stem, out, *pairs))
    result, acked = {"job": job}, False
    deadline = time.monotonic() + float(timeout_s)
    while "music" not in result and "error" not in result:
        if time.monotonic() > deadline:
            result.update(error="timeout", message="no %s within %s s" % ("done" if acked else "ack", timeout_s))
            break
        try:
            packet = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:  # e.g. nobody listening on that port
            result.update(error="no_server", message=str(e))
            break
        for address, a in osc_decode(packet, []):
            if address == "/bnmusic/error" and a and a[0] in (job, "/bnmusic/render_ex", "#packet"):
                result.update(error=a[1], message=a[2] if len(a) > 2 else "")
            elif a and a[0] == job and address == "/bnmusic/ack":
                acked = True
            elif a and a[0] == job and address == "/bnmusic/done":
                result.update(zip(DONE, a[1:6]))
                result.update(coverage=a[6], nmr_db=a[7], lambda_min_db=a[8], lambda_max_db=a[9])
    with open(result_file + ".tmp", "w", encoding="utf-8") as f:
        for key, value in result.items():
            f.write("%s\t%s\n" % (key, value))
    os.replace(result_file + ".tmp", result_file)  # the script never reads half a file
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
]==]

-- Double quotes work for Windows' command line and for sh; under sh the characters
-- special inside them (\ " $ `) get a backslash.
local function shell_quote(s)
  if reaper.GetOS():match("Win") then return '"' .. s:gsub('"', '\\"') .. '"' end
  return '"' .. s:gsub('[\\"$`]', "\\%0") .. '"'
end

local function wait_with_python(job, stem, on_done)
  local dir = stem:match("^(.*[\\/])") or ""
  local client = dir .. "bnmusic_osc_client.py"
  local f = io.open(client, "w")
  if not f then fail("bnmusic: cannot write " .. client) return end
  f:write(PY_CLIENT)
  f:close()
  local result_file = dir .. job .. ".result.tsv"
  os.remove(result_file)
  local args = { PYTHON, client, HOST, tostring(PORT), job, stem, OUT_DIR, tostring(TIMEOUT_S), result_file }
  if PRESET ~= "" then args[#args + 1] = "preset"; args[#args + 1] = PRESET end
  if PROMPT ~= "" then args[#args + 1] = "prompt"; args[#args + 1] = PROMPT end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  reaper.ExecProcess(table.concat(quoted, " "), -1) -- -1: do not wait; the result file says when it is done
  log("bnmusic: LuaSocket not found; talking OSC through " .. client)
  local deadline = reaper.time_precise() + TIMEOUT_S + 30
  local function poll()
    local rf = io.open(result_file, "r")
    if rf then
      local result = {}
      for line in rf:lines() do
        local k, v = line:match("^([^\t]+)\t(.*)$")
        if k then result[k] = tonumber(v) or v end
      end
      rf:close()
      os.remove(result_file)
      if result.error then fail("bnmusic: " .. result.error .. ": " .. tostring(result.message)) return end
      on_done(result, nil)
      return
    end
    if reaper.time_precise() > deadline then fail("bnmusic: the Python client gave no result") return end
    reaper.defer(poll)
  end
  poll()
end

local function main()
  local track = reaper.GetSelectedTrack(0, 0)
  if not track then fail("Select the track holding the noise first.") return end
  local stem, err, start_s = render_stem(track)
  if not stem then fail("bnmusic: " .. err) return end
  log("bnmusic: rendered " .. stem)
  -- Job ids are unique for the server's lifetime: seconds, microseconds and a random part.
  local job = string.format("reaper-%d-%06d-%04d", os.time(),
    math.floor((reaper.time_precise() % 1) * 1e6), math.random(0, 9999))
  local function on_done(result, lane) import_result(track, start_s, result, lane) end
  local socket = load_socket()
  if socket then
    wait_with_luasocket(socket, job, stem, on_done)
  else
    wait_with_python(job, stem, on_done)
  end
end

main()

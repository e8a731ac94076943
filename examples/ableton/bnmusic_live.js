// bnmusic for Ableton Live: a [js] for a Max for Live device (Live 12 Suite, or Live 12
// Standard/Intro with Max for Live). See examples/ableton/README.md for the patch.
//
// Messages in (inlet 0):
//   subscribe <port>   -> asks bnmusic to send its replies to [udpreceive <port>]
//   render             -> sends the highlighted Session clip's audio file to bnmusic
//   /bnmusic/...       -> replies from [udpreceive]; on /bnmusic/done it imports the
//                         music stem into the slot to the right and writes the lambda
//                         lane as that clip's Track Volume envelope.
// Out (outlet 0): OSC messages for [udpsend 127.0.0.1 9750]; outlet 1: status text.
//
// Uses the Live Object Model: ClipSlot.create_audio_clip (Live 12 and later),
// Clip.file_path, Clip.create_automation_envelope / automation_envelope,
// Envelope.insert_step and DeviceParameter.str_for_value. Written against the LOM
// documentation; not run inside Live by the author (no Live on the build machine).

autowatch = 1;
inlets = 1;
outlets = 2;

var job = null;
var source = null; // {track: index, scene: index}

function status(text) { outlet(1, "set", text); post("bnmusic: " + text + "\n"); }

function subscribe(port) {
  outlet(0, "/bnmusic/subscribe", "127.0.0.1", port);
}

function render() {
  var slot = new LiveAPI("live_set view highlighted_clip_slot");
  if (!slot.id || slot.id == 0) { status("select the noise clip in Session view"); return; }
  var clip = new LiveAPI(slot.unquotedpath + " clip");
  if (!clip.id || clip.id == 0 || clip.get("is_audio_clip") == 0) { status("the selected slot holds no audio clip"); return; }
  var path = String(clip.get("file_path"));
  var parts = slot.unquotedpath.split(" "); // live_set tracks T clip_slots S
  source = { track: parseInt(parts[2], 10), scene: parseInt(parts[4], 10) };
  job = "m4l-" + new Date().getTime();
  outlet(0, "/bnmusic/render", job, path);
  status("sent " + path);
}

function anything() {
  var args = arrayfromargs(arguments);
  if (args[0] != job) return;
  if (messagename == "/bnmusic/ack") status("queued");
  else if (messagename == "/bnmusic/progress") status(args[1] + " " + Math.round(args[2] * 100) + " %");
  else if (messagename == "/bnmusic/error") status("error " + args[1] + ": " + args[2]);
  else if (messagename == "/bnmusic/done") imported(args[1], args[3]);
}

function imported(music, laneCsv) {
  var song = new LiveAPI("live_set");
  var target = source.track + 1;
  song.call("create_audio_track", target);
  var track = new LiveAPI("live_set tracks " + target);
  track.set("name", "bnmusic music");
  var slot = new LiveAPI("live_set tracks " + target + " clip_slots " + source.scene);
  slot.call("create_audio_clip", music); // Live 12+: older versions cannot import from a script
  var clip = new LiveAPI(slot.unquotedpath + " clip");
  if (!clip.id || clip.id == 0) { status("could not import " + music + "; drag it in by hand"); return; }
  var volume = new LiveAPI("live_set tracks " + target + " mixer_device volume");
  var env = clip.call("create_automation_envelope", "id", volume.id);
  var envApi = new LiveAPI(env instanceof Array ? env.join(" ") : "id " + env);
  var beatsPerSecond = song.get("tempo") / 60.0;
  var lane = readLane(laneCsv);
  for (var i = 0; i < lane.length; i++) {
    var next = i + 1 < lane.length ? lane[i + 1].t : lane[i].t + 0.01;
    envApi.call("insert_step", lane[i].t * beatsPerSecond, (next - lane[i].t) * beatsPerSecond,
                volumeFor(volume, lane[i].db));
  }
  status("imported " + music + " with " + lane.length + " lane steps");
}

// The volume parameter's value for a gain in dB, found by bisection on the parameter's
// own display string ("-6.0 dB"), so Live's fader law need not be known. Gains above the
// fader's top (+6 dB) are clamped.
function volumeFor(param, db) {
  var lo = Number(param.get("min")), hi = Number(param.get("max"));
  for (var k = 0; k < 30; k++) {
    var mid = (lo + hi) / 2;
    var shown = parseFloat(String(param.call("str_for_value", mid)));
    if (isNaN(shown) || shown < db) lo = mid; else hi = mid;
  }
  return hi;
}

function readLane(path) {
  var f = new File(path, "read");
  var lane = [];
  if (!f.isopen) { status("cannot read " + path); return lane; }
  f.readline(); // time_s,gain_db,gain_linear
  var line;
  while ((line = f.readline()) != null && f.position <= f.eof) {
    var cells = line.split(",");
    if (cells.length >= 2) lane.push({ t: parseFloat(cells[0]), db: parseFloat(cells[1]) });
  }
  f.close();
  return lane;
}

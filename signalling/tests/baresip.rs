//! Two real softphones — baresip (Debian `baresip-core`) — calling through the platform: user
//! 100 calls user 101, each side sends its own tone from a wav file, and what each side decodes
//! carries the other side's tone and not its own.
//!
//! Each baresip runs headless from a config dir written here: its audio source is the `aufile`
//! module playing the tone, the `sndfile` filter records what it decodes, and the test drives it
//! over the `ctrl_tcp` control socket (netstring-framed JSON commands from the `menu` module,
//! JSON events back). No audio player module is loaded: decoded audio goes only to the recording.

mod peers;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use centrex_coord::testing::{PATIENCE, eventually, free_ports};
use peers::{DOMAIN, Platform};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Sample rate of the tone files and of the recordings: PCMU's.
const RATE: u32 = 8_000;
/// The caller's tone, Hz.
const CALLER_TONE: f64 = 440.0;
/// The callee's tone, Hz: not a harmonic of the caller's (it lies between 880 and 1320), and
/// above it, so the codec's distortion of neither lands on the other.
const CALLEE_TONE: f64 = 1_000.0;
/// Peak amplitude of both tones (about -12 dBFS): loud, and clear of clipping.
const AMPLITUDE: f64 = 8_000.0;
/// Length of the tone files. `aufile` ends the call at the end of its file, so this is longer
/// than any wait below.
const TONE_LENGTH: u32 = 30;
/// How much of the other side's audio each side records before the caller hangs up.
const HEARD: Duration = Duration::from_secs(2);
/// The heard tone must be this many times stronger than the side's own in its recording
/// (40 dB).
const MIN_RATIO: f64 = 100.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softphones_in_a_call_each_hear_the_others_tone_and_not_their_own() {
    let platform = Platform::start().await;
    let dir = tempfile::tempdir().unwrap();
    // RTP port ranges of their own: clear of the media node's 31000-31999 and of the ephemeral
    // ports other tests bind.
    let caller =
        Softphone::start(dir.path(), "100", CALLER_TONE, "20000-20499", platform.sip).await;
    let callee =
        Softphone::start(dir.path(), "101", CALLEE_TONE, "20500-20999", platform.sip).await;
    eventually("both softphones to register", || async {
        (caller.registered().await && callee.registered().await).then_some(())
    })
    .await;

    caller.command("dial", &format!("sip:101@{DOMAIN}")).await;
    caller.event("CALL_ESTABLISHED").await;
    callee.event("CALL_ESTABLISHED").await;
    eventually("both softphones to record the other's audio", || async {
        (caller.recorded() >= HEARD && callee.recorded() >= HEARD).then_some(())
    })
    .await;
    caller.command("hangup", "").await;
    caller.event("CALL_CLOSED").await;
    callee.event("CALL_CLOSED").await;

    let caller_heard = Heard::of(&caller.quit().await, CALLER_TONE, CALLEE_TONE);
    let callee_heard = Heard::of(&callee.quit().await, CALLEE_TONE, CALLER_TONE);
    let report = format!("caller {caller_heard}; callee {callee_heard}");
    eprintln!("{report}");
    assert!(
        caller_heard.is_the_other_side() && callee_heard.is_the_other_side(),
        "each side must hear the other's tone (amplitude above {}) at least {MIN_RATIO}× its own: {report}",
        AMPLITUDE / 2.0,
    );
}

/// How strong one side's own tone and the other side's are in its recording.
struct Heard {
    own_tone: f64,
    own: f64,
    other_tone: f64,
    other: f64,
    seconds: f64,
}

impl Heard {
    fn of(recording: &[i16], own_tone: f64, other_tone: f64) -> Self {
        Self {
            own_tone,
            own: tone_amplitude(recording, own_tone),
            other_tone,
            other: tone_amplitude(recording, other_tone),
            seconds: recording.len() as f64 / f64::from(RATE),
        }
    }

    /// Loud at the other side's tone, and far quieter at its own.
    fn is_the_other_side(&self) -> bool {
        self.other >= AMPLITUDE / 2.0 && self.other >= MIN_RATIO * self.own
    }
}

impl std::fmt::Display for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recorded {:.2} s: other's {} Hz at {:.1}, own {} Hz at {:.1}",
            self.seconds, self.other_tone, self.other, self.own_tone, self.own
        )
    }
}

/// Amplitude of the `frequency` component of `samples`: one DFT bin by Goertzel's recurrence,
/// scaled so that a sine of amplitude `a` at `frequency` gives about `a`.
fn tone_amplitude(samples: &[i16], frequency: f64) -> f64 {
    let coefficient = 2.0 * (std::f64::consts::TAU * frequency / f64::from(RATE)).cos();
    let (mut previous, mut before) = (0.0, 0.0);
    for &sample in samples {
        let current = f64::from(sample) + coefficient * previous - before;
        before = previous;
        previous = current;
    }
    let power = previous * previous + before * before - coefficient * previous * before;
    2.0 * power.max(0.0).sqrt() / samples.len().max(1) as f64
}

/// `seconds` of a sine at `frequency` as a mono 16-bit PCM wav file at [`RATE`].
fn write_tone(path: &Path, frequency: f64, seconds: u32) {
    let samples = (0..RATE * seconds).map(|n| {
        let phase = std::f64::consts::TAU * frequency * f64::from(n) / f64::from(RATE);
        (AMPLITUDE * phase.sin()).round() as i16
    });
    let data: Vec<u8> = samples.flat_map(i16::to_le_bytes).collect();
    let data_len = u32::try_from(data.len()).unwrap();
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend(b"RIFF");
    wav.extend((36 + data_len).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(1u16.to_le_bytes()); // PCM
    wav.extend(1u16.to_le_bytes()); // mono
    wav.extend(RATE.to_le_bytes());
    wav.extend((RATE * 2).to_le_bytes()); // bytes per second
    wav.extend(2u16.to_le_bytes()); // bytes per frame
    wav.extend(16u16.to_le_bytes()); // bits per sample
    wav.extend(b"data");
    wav.extend(data_len.to_le_bytes());
    wav.extend(data);
    std::fs::write(path, wav).unwrap();
}

/// The samples of a mono 16-bit PCM wav file at [`RATE`]. A data chunk whose length was never
/// filled in (the writer did not close the file) runs to the end of the file.
fn read_recording(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{} is not a wav file",
        path.display()
    );
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..];
        match id {
            b"fmt " => {
                let field = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                format = Some((field(0), field(2), rate, field(14)));
            }
            b"data" => {
                assert_eq!(
                    format,
                    Some((1, 1, RATE, 16)),
                    "{}: expected PCM, mono, {RATE} Hz, 16 bits (format, channels, rate, bits)",
                    path.display()
                );
                let len = if len == 0 {
                    body.len()
                } else {
                    len.min(body.len())
                };
                return body[..len & !1]
                    .chunks_exact(2)
                    .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                    .collect();
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    panic!("{} has no data chunk", path.display());
}

/// A running baresip registered as one user, killed on drop.
struct Softphone {
    user: &'static str,
    dir: PathBuf,
    process: Process,
    control: Control,
}

impl Softphone {
    /// Writes a config dir for `user` sending `tone` and starts baresip on it, retrying with
    /// another control port when the one probed free was taken before baresip bound it.
    async fn start(
        root: &Path,
        user: &'static str,
        tone: f64,
        rtp_ports: &str,
        platform: SocketAddr,
    ) -> Self {
        let dir = root.join(user);
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        write_tone(&dir.join("tone.wav"), tone, TONE_LENGTH);
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{user}@{DOMAIN}>;auth_pass=secret-{user};outbound=\"sip:{platform};transport=udp\";\
                 regint=3600;answermode=auto;audio_codecs=PCMU\n"
            ),
        )
        .unwrap();
        for _ in 0..3 {
            let [control_port, _] = free_ports();
            std::fs::write(dir.join("config"), config(&dir, rtp_ports, control_port)).unwrap();
            let mut process = Process::spawn(&dir);
            let address = SocketAddr::from(([127, 0, 0, 1], control_port));
            let connected = eventually("baresip to open its control port", || {
                let exited = process.exited();
                async move {
                    if exited {
                        return Some(None);
                    }
                    TcpStream::connect(address).await.ok().map(Some)
                }
            })
            .await;
            if let Some(stream) = connected {
                return Self {
                    user,
                    control: Control::new(stream),
                    dir,
                    process,
                };
            }
        }
        panic!(
            "baresip for {user} exited three times at start-up; log:\n{}",
            log(&dir)
        );
    }

    /// Whether the platform accepted this phone's registration.
    async fn registered(&self) -> bool {
        let status = self.command("reginfo", "").await;
        let aor = format!("sip:{}@{DOMAIN}", self.user);
        status
            .lines()
            .any(|line| line.contains(&aor) && line.contains("OK"))
    }

    /// Runs a control command; fails the test unless baresip accepts it.
    async fn command(&self, command: &str, params: &str) -> String {
        match self.control.command(command, params).await {
            Ok(response) => response,
            Err(problem) => panic!(
                "baresip {}: `{command} {params}`: {problem}; log:\n{}",
                self.user,
                log(&self.dir)
            ),
        }
    }

    /// Waits for an event of `kind` (e.g. `CALL_ESTABLISHED`).
    async fn event(&self, kind: &str) -> Value {
        match self.control.event(kind).await {
            Ok(event) => event,
            Err(problem) => panic!(
                "baresip {}: waiting for {kind}: {problem}; log:\n{}",
                self.user,
                log(&self.dir)
            ),
        }
    }

    /// How much decoded audio is recorded so far (none before the call has media): sndfile
    /// writes the samples as they come, after a 44-byte header.
    fn recorded(&self) -> Duration {
        let bytes = self
            .recording()
            .and_then(|path| std::fs::metadata(path).ok())
            .map_or(0, |meta| meta.len());
        let samples = bytes.saturating_sub(44) / 2;
        Duration::from_secs_f64(samples as f64 / f64::from(RATE))
    }

    /// The sndfile filter's recording of decoded audio, once it exists.
    fn recording(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.join("recordings"))
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.to_string_lossy().ends_with("-dec.wav"))
    }

    /// Quits baresip, so that its recording is complete, and returns the recorded samples.
    async fn quit(mut self) -> Vec<i16> {
        // baresip may exit before it answers: the command is only sent.
        self.control.send("quit", "").await;
        let process = &mut self.process;
        eventually("baresip to quit", || {
            let exited = process.exited();
            async move { exited.then_some(()) }
        })
        .await;
        let path = self.recording().unwrap_or_else(|| {
            panic!(
                "baresip {} recorded nothing; log:\n{}",
                self.user,
                log(&self.dir)
            )
        });
        read_recording(&path)
    }
}

/// The baresip config: everything on 127.0.0.1, PCMU only, the tone as the audio source, the
/// decoded audio recorded, and the control socket on `control_port`.
fn config(dir: &Path, rtp_ports: &str, control_port: u16) -> String {
    let (tone, recordings) = (dir.join("tone.wav"), dir.join("recordings"));
    format!(
        "\
poll_method		epoll
# Port 0: no probing race; the registration tells the platform where this phone is.
sip_listen		127.0.0.1:0
# Advertised in Contact and SDP: loopback, never the machine's other addresses.
net_interface		127.0.0.1
call_local_timeout	20
call_max_calls		1
audio_source		aufile,{tone}
rtp_ports		{rtp_ports}
rtcp_mux		no
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			sndfile.so
module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{control_port}
snd_path		{recordings}
statmode_default	off
ringback_disabled	yes
",
        tone = tone.display(),
        recordings = recordings.display(),
    )
}

/// baresip's log (stdout and stderr).
fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
}

/// A baresip process, killed on drop.
struct Process(Child);

impl Process {
    fn spawn(dir: &Path) -> Self {
        let log = File::create(dir.join("baresip.log")).unwrap();
        let spawned = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        match spawned {
            Ok(child) => Self(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "baresip is not installed: `apt-get install baresip-core` (scripts/install-deps.sh does it)"
            ),
            Err(e) => panic!("cannot run baresip: {e}"),
        }
    }

    fn exited(&mut self) -> bool {
        self.0.try_wait().expect("poll baresip").is_some()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection to baresip's `ctrl_tcp` module: netstring-framed JSON, commands answered by
/// responses carrying their token, events in between.
struct Control {
    connection: Mutex<Connection>,
}

struct Connection {
    stream: BufReader<TcpStream>,
    /// Events read while waiting for something else, oldest first.
    events: Vec<Value>,
    tokens: u64,
}

impl Control {
    fn new(stream: TcpStream) -> Self {
        Self {
            connection: Mutex::new(Connection {
                stream: BufReader::new(stream),
                events: Vec::new(),
                tokens: 0,
            }),
        }
    }

    /// Sends `command` without waiting for its response; returns its token.
    async fn send(&self, command: &str, params: &str) -> String {
        let mut connection = self.connection.lock().await;
        connection.send(command, params).await
    }

    /// Sends `command` and returns the data of its response, or why it failed.
    async fn command(&self, command: &str, params: &str) -> Result<String, String> {
        let mut connection = self.connection.lock().await;
        let token = connection.send(command, params).await;
        tokio::time::timeout(PATIENCE, async {
            loop {
                let message = connection.read().await?;
                if message["response"] == true && message["token"] == token.as_str() {
                    let data = message["data"].as_str().unwrap_or_default().to_owned();
                    return if message["ok"] == true {
                        Ok(data)
                    } else {
                        Err(format!("refused: {data}"))
                    };
                }
                if message["event"] == true {
                    connection.events.push(message);
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no response within {PATIENCE:?}")))
    }

    /// Waits for an event of `kind`, taking it from those already read if it is there.
    async fn event(&self, kind: &str) -> Result<Value, String> {
        let mut connection = self.connection.lock().await;
        if let Some(at) = connection.events.iter().position(|e| e["type"] == kind) {
            return Ok(connection.events.remove(at));
        }
        tokio::time::timeout(PATIENCE, async {
            loop {
                let message = connection.read().await?;
                if message["event"] == true {
                    if message["type"] == kind {
                        return Ok(message);
                    }
                    connection.events.push(message);
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            let seen: Vec<_> = connection
                .events
                .iter()
                .map(|e| e["type"].clone())
                .collect();
            Err(format!("none within {PATIENCE:?}; events seen: {seen:?}"))
        })
    }
}

impl Connection {
    async fn send(&mut self, command: &str, params: &str) -> String {
        self.tokens += 1;
        let token = self.tokens.to_string();
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.stream
            .get_mut()
            .write_all(frame.as_bytes())
            .await
            .expect("write to baresip's control socket");
        token
    }

    /// The next message.
    async fn read(&mut self) -> Result<Value, String> {
        let mut length = Vec::new();
        self.stream
            .read_until(b':', &mut length)
            .await
            .map_err(|e| format!("control socket: {e}"))?;
        let length: usize = std::str::from_utf8(&length)
            .ok()
            .and_then(|text| text.strip_suffix(':'))
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| format!("bad netstring length {length:?} (or the socket closed)"))?;
        let mut body = vec![0; length + 1];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("control socket: {e}"))?;
        if body.pop() != Some(b',') {
            return Err("netstring without its trailing comma".into());
        }
        serde_json::from_slice(&body).map_err(|e| format!("bad JSON from baresip: {e}"))
    }
}

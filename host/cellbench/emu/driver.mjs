// The emulated RP2040 of cellbench's `--board rp2040-emu`: rp2040js running the official
// MicroPython rp2 image, driven by host/cellbench/emu/board.py over this process's stdin and
// stdout (one message per line, fields separated by spaces, times in emulated microseconds).
//
// driver -> host:  S <t_us> <hex>        bytes the board wrote to its USB CDC serial port
//                  A <t_us> <channel>    an ADC conversion started and no fresh code of the channel
//                                        is at hand; the host answers `a <code> [<code> ...]`
//                  G <t_us> <gpio> <0|1|2>  a watched pin changed (0 low, 1 high, 2 not driven)
//                  W <t_us> <num> <den>  the watched PWM output's duty is num/den
//                  T <t_us> <cycles>     emulated time (sent at least every 100 ms of it)
//                  R <t_us> <reason>     the chip reset (1 watchdog timer, 2 forced: machine.reset(),
//                                        3 the host's `r`); it boots again on the same flash
//                  F <path>              the flash was saved to path (answer to `f`)
// host -> driver:  s <hex>               bytes to the board's serial port
//                  a <code> [<code> ...] the 12-bit result of the pending ADC conversion, then
//                                        results for the channel's next conversions (a batch:
//                                        one round trip per channel per tick, not per conversion)
//                  f <path>              save the flash (its first 2 MB, a Pico's) to path
//                  r                     reset the chip now (its RUN pin: a reset button), flash kept
//                  q                     quit
//
// Two gaps of rp2040js 1.4.1 are closed here (../shared/rp2040/README.md): the USB OUT
// endpoint is NAKed (held) while the host has nothing to send, instead of being answered
// with empty packets every 10 us, and the serial-flash erase/program commands the boot ROM
// sends through the SSI are applied to the flash array, so littlefs formats and the run
// journal is written. While the core sleeps (WFE/WFI) the clock jumps to the next alarm.
//
// ADC batches: the host's cell advances in steps of 1 ms (simcell.Plant.sync), so codes
// it gives for a channel at one instant stand for that channel's conversions for the next
// ADC_FRESH_NS of emulated time, unless a watched pin or the PWM duty changes first (the
// cell then carries another current): such a change, or age, drops the batch.
import fs from 'fs';
import readline from 'readline';
import { Simulator, USBCDC, ConsoleLogger, LogLevel } from 'rp2040js';

const SimulationClock = new Simulator().clock.constructor; // not exported by the package's index

const CYCLE_NS = 8; // rp2040js' fixed 125 MHz instruction clock
const CHUNK = 20000; // instructions (or sleeps) between looks at the host's input
const TIME_EVERY_NS = 100e6; // a T line at least this often (emulated)
const FUNCTION_PWM = 4;
const FLASH_SAVED = 2 * 1024 * 1024; // the Pico's W25Q16: image and filesystem, all MicroPython uses
const RUN_PIN_RESET = 3;
const ADC_FRESH_NS = 1e6; // a batch of ADC codes stands for this long (the plant's own step)
const ADC_CHANNELS = 5; // R's reason for the host's reset (the watchdog's own are 1 and 2)

const cfg = JSON.parse(process.argv[2]);
const out = [];
let quitting = false;

function send(line) { out.push(line); }
function flushOut() {
  if (out.length) { process.stdout.write(out.join('\n') + '\n'); out.length = 0; }
}

// ---- the image ------------------------------------------------------------------------------
function loadImage(flash, path) {
  const data = fs.readFileSync(path);
  if (!path.endsWith('.uf2')) { flash.set(data, 0); return; }
  for (let o = 0; o + 512 <= data.length; o += 512) { // UF2: 512-byte blocks of 256-byte payloads
    const v = new DataView(data.buffer, data.byteOffset + o, 512);
    if (v.getUint32(0, true) !== 0x0a324655 || v.getUint32(4, true) !== 0x9e5d5157) continue;
    const addr = v.getUint32(12, true); const n = v.getUint32(16, true);
    flash.set(data.subarray(o + 32, o + 32 + n), addr - 0x10000000);
  }
}

// ---- flash writes (gap 2) -------------------------------------------------------------------
// The boot ROM's flash_range_erase/program drive the flash chip by hand: chip select forced
// low through IO_QSPI SS_CTRL.OUTOVER, command bytes through SSI DR0. Decode and apply them.
function installFlashWrites(mcu) {
  const ioq = mcu.peripherals[0x40018];
  const ssi = mcu.peripherals[0x18000];
  const regs = new Map();
  let cs = false; let buf = [];
  const apply = () => {
    if (buf.length < 4) return;
    const cmd = buf[0]; const addr = (buf[1] << 16) | (buf[2] << 8) | buf[3];
    const erase = { 0x20: 0x1000, 0x52: 0x8000, 0xd8: 0x10000 }[cmd];
    if (erase) { const a = addr & ~(erase - 1); mcu.flash.fill(0xff, a, a + erase); }
    else if (cmd === 0x02) { // page program: AND into the page, wrapping within 256 bytes
      const page = addr & ~0xff;
      for (let i = 4; i < buf.length; i++) mcu.flash[page + ((addr + i - 4) & 0xff)] &= buf[i];
    }
  };
  const ioRead = ioq.readUint32.bind(ioq);
  ioq.readUint32 = (off) => (off === 0x0c || off === 0x1c) ? (regs.get(off) ?? 0) : ioRead(off);
  ioq.writeUint32 = (off, value) => {
    regs.set(off, value);
    if (off !== 0x0c) return;
    const low = ((value >> 8) & 3) === 2; // OUTOVER = 2: chip select driven low
    if (low && !cs) { cs = true; buf = []; } else if (!low && cs) { cs = false; apply(); buf = []; }
  };
  let rx = 0; // RX FIFO level, so the ROM sees a reply (always 0: not busy) per byte sent
  const ssiRead = ssi.readUint32.bind(ssi); const ssiWrite = ssi.writeUint32.bind(ssi);
  ssi.readUint32 = (off) => {
    if (off === 0x24) return rx; // RXFLR
    if (off === 0x20) return 0; // TXFLR
    if (off === 0x60) { if (rx > 0) rx--; return 0; } // DR0
    return ssiRead(off);
  };
  ssi.writeUint32 = (off, value) => {
    if (off === 0x60) { if (rx < 16) rx++; if (cs) buf.push(value & 0xff); return; }
    if (off === 0x08 && (value & 1) === 0) rx = 0; // SSIENR = 0 empties the FIFOs
    ssiWrite(off, value);
  };
}

// ---- one chip -------------------------------------------------------------------------------
class Chip {
  constructor(flash, resetReason, nanos) {
    const clock = new SimulationClock();
    clock.nanosCounter = nanos; // emulated time goes on across a reset
    this.sim = new Simulator(clock);
    const mcu = this.mcu = this.sim.rp2040;
    const rom = fs.readFileSync(cfg.bootrom);
    mcu.loadBootrom(new Uint32Array(rom.buffer, rom.byteOffset, rom.length >> 2));
    mcu.logger = new ConsoleLogger(LogLevel.Error);
    if (flash) mcu.flash.set(flash);
    else if (cfg.flash) mcu.flash.set(fs.readFileSync(cfg.flash)); // a flash saved with `f`
    else loadImage(mcu.flash, cfg.image);
    mcu.core.PC = 0x10000000; // boot2 first, as rp2040js' own MicroPython demo does
    installFlashWrites(mcu);
    const wdt = mcu.peripherals[0x40058];
    if (resetReason === 1 || resetReason === 2) wdt.reason = resetReason; // WATCHDOG REASON: TIMER, FORCE
    this.resetBy = 0;
    // rp2040js 1.4.1 re-arms the watchdog's alarm when it fires, and with the counter at 0 it
    // re-arms it 0 ns ahead: SimulationClock.tick then fires it forever, and emulated time
    // stops (a WDT nobody feeds, e.g. at the bare REPL, hung the emulator instead of
    // resetting the chip). The chip resets here anyway: stop the alarm.
    wdt.onWatchdogTrigger = () => { this.resetBy = wdt.reason || 1; wdt.alarm.enable = false; };
    this.adcPending = -1;
    this.adcCodes = []; // per channel: codes still fresh, oldest first
    this.adcSince = []; // per channel: emulated ns the batch was made at
    this.dropADC();
    mcu.adc.onADCRead = (ch) => {
      const codes = this.adcCodes[ch];
      if (codes.length && this.sim.clock.nanos - this.adcSince[ch] < ADC_FRESH_NS) {
        this.completeADC(codes.shift());
      } else this.adcPending = ch;
    };
    this.adcAlarm = mcu.clock.createAlarm(() => mcu.adc.completeADCRead(this.adcValue, false));
    this.setupUSB();
    this.watchPins();
  }

  get micros() { return Math.floor(this.sim.clock.nanos / 1000); }

  dropADC() { for (let c = 0; c < ADC_CHANNELS; c++) this.adcCodes[c] = []; }

  changed(line) { send(line); this.dropADC(); } // a pin or duty change: the cell's current changes

  // The host's batch for the pending conversion: the first code completes it, the rest wait.
  takeADC(codes) {
    const ch = this.adcPending;
    this.adcPending = -1;
    this.adcSince[ch] = this.sim.clock.nanos;
    this.adcCodes[ch] = codes.slice(1);
    this.completeADC(codes[0]);
  }

  completeADC(code) {
    this.adcValue = code & 0xfff;
    this.adcAlarm.schedule(this.mcu.adc.sampleTime * 1000);
  }

  setupUSB() { // gap 1: hold the OUT transfer (a NAK) until the host has bytes for it
    const cdc = this.cdc = new USBCDC(this.mcu.usbCtrl);
    const usb = this.mcu.usbCtrl;
    const read = this.usbRead = usb.onEndpointRead;
    this.heldRead = null;
    this.pending = [];
    usb.onEndpointRead = (ep, size) => {
      if (ep === cdc.outEndpoint && cdc.txFIFO.empty) { this.heldRead = [ep, size]; return; }
      read(ep, size);
    };
    cdc.onSerialData = (b) => send(`S ${this.micros} ${Buffer.from(b).toString('hex')}`);
  }

  feedSerial() {
    const fifo = this.cdc.txFIFO;
    while (this.pending.length && !fifo.full) fifo.push(this.pending.shift());
    if (this.heldRead && !fifo.empty) { const [ep, n] = this.heldRead; this.heldRead = null; this.usbRead(ep, n); }
  }

  watchPins() {
    const mcu = this.mcu;
    const level = (p) => { const s = mcu.gpio[p].value; return s <= 1 ? s : 2; };
    for (const p of cfg.watch || []) {
      let last = level(p);
      send(`G ${this.micros} ${p} ${last}`);
      mcu.gpio[p].addListener(() => { const v = level(p); if (v !== last) { last = v; this.changed(`G ${this.micros} ${p} ${v}`); } });
    }
    if (cfg.pwm == null) return;
    const pin = cfg.pwm; const slice = mcu.pwm.channels[(pin >> 1) & 7]; const b = pin & 1;
    let lastDuty = '';
    const duty = () => { // what the filter after the pin averages: num/den of the supply
      const g = mcu.gpio[pin];
      if (g.functionSelect !== FUNCTION_PWM) return g.outputEnable ? `${g.outputValue ? 1 : 0} 1` : '1 2';
      const top = slice.top + 1; let cc = b ? slice.cc >>> 16 : slice.cc & 0xffff;
      if (!(slice.csr & 1)) return `${g.outputValue ? 1 : 0} 1`; // a stopped slice holds its level
      cc = Math.min(cc, top);
      return (slice.csr & (b ? 8 : 4)) ? `${top - cc} ${top}` : `${cc} ${top}`;
    };
    const check = () => { const d = duty(); if (d !== lastDuty) { lastDuty = d; this.changed(`W ${this.micros} ${d}`); } };
    const pwmWrite = mcu.pwm.writeUint32.bind(mcu.pwm);
    mcu.pwm.writeUint32 = (off, v) => { pwmWrite(off, v); check(); };
    mcu.gpio[pin].addListener(check);
    const io = mcu.peripherals[0x40014]; const ioWrite = io.writeUint32.bind(io);
    io.writeUint32 = (off, v) => { ioWrite(off, v); check(); }; // function select of the pin
    check();
  }

  // Run until CHUNK instructions/sleeps are done, an ADC conversion waits for the host, or a reset.
  run() {
    const core = this.mcu.core; const clock = this.sim.clock;
    for (let i = 0; i < CHUNK && this.adcPending < 0 && !this.resetBy; i++) {
      if (core.waiting) {
        const dt = clock.nanosToNextAlarm;
        clock.tick(dt > 0 ? dt : CYCLE_NS);
      } else {
        clock.tick(core.executeInstruction() * CYCLE_NS);
      }
    }
  }
}

// ---- the loop -------------------------------------------------------------------------------
let chip = new Chip(null, 0, 0);
let adcReply = null; // resolves with the host's answer to an `A` line
let lastT = -Infinity;

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const sp = line.indexOf(' ');
  const cmd = sp < 0 ? line : line.slice(0, sp); const arg = sp < 0 ? '' : line.slice(sp + 1);
  if (cmd === 's') { for (const x of Buffer.from(arg, 'hex')) chip.pending.push(x); }
  else if (cmd === 'a') { const r = adcReply; adcReply = null; if (r) r(arg.split(' ').map(Number)); }
  else if (cmd === 'f') { fs.writeFileSync(arg, chip.mcu.flash.subarray(0, FLASH_SAVED)); send(`F ${arg}`); }
  else if (cmd === 'r') { chip.resetBy = RUN_PIN_RESET; }
  else if (cmd === 'q') quit();
});
rl.on('close', quit);

// Stop at the next chunk; a conversion waiting for the host's answer waits no more.
function quit() {
  quitting = true;
  if (adcReply) { const r = adcReply; adcReply = null; r([0]); }
}

async function main() {
  while (!quitting) {
    chip.feedSerial();
    chip.run();
    const c = chip;
    if (c.resetBy) { // the watchdog fired: a new chip on the same flash, as after a real reset
      send(`R ${c.micros} ${c.resetBy}`);
      chip = new Chip(c.mcu.flash, c.resetBy, c.sim.clock.nanos);
    }
    if (c.sim.clock.nanos - lastT >= TIME_EVERY_NS) { lastT = c.sim.clock.nanos; send(`T ${c.micros} ${c.mcu.core.cycles}`); }
    if (c.adcPending >= 0 && c === chip) {
      send(`A ${c.micros} ${c.adcPending}`);
      flushOut();
      c.takeADC(await new Promise((resolve) => { adcReply = resolve; }));
      continue;
    }
    flushOut();
    await new Promise((resolve) => setImmediate(resolve));
  }
  flushOut();
  process.exit(0); // stdin would keep the process alive
}
main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });

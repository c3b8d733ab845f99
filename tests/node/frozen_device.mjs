// A device process for the heartbeat test: registers, prints "registered", then lives until
// the test stops it (SIGSTOP: the TCP connection stays open but nothing answers pings).
import { io } from 'socket.io-client';

const url = (process.env.UNISONO_URL ?? 'http://127.0.0.1:8080') + '/players';
const socket = io(url, { auth: { token: process.env.DEVICE_TOKEN }, transports: ['websocket'], reconnection: false });
socket.on('connect', () => {
  socket.emit('player:register', { deviceId: process.env.DEVICE_ID, name: 'frozen' }, () => {
    console.log('registered');
  });
});
socket.on('connect_error', (e) => {
  console.error('connect_error', e.message);
  process.exit(1);
});
setInterval(() => {}, 1000);

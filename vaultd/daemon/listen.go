package daemon

import (
	"fmt"
	"net"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
)

// listen returns the API's TCP listener and, when http3 is on, the UDP
// socket on the same port. Under systemd socket activation (vaultd.socket
// with ListenStream= and ListenDatagram=) the inherited sockets are used;
// otherwise addr is bound, and with port 0 the UDP socket takes the port
// the TCP listener got.
func listen(addr string, http3 bool) (net.Listener, net.PacketConn, error) {
	if os.Getenv("LISTEN_FDS") != "" {
		lns, err := activation.Listeners()
		if err != nil {
			return nil, nil, fmt.Errorf("socket activation: %w", err)
		}
		pcs, err := activation.PacketConns()
		if err != nil {
			return nil, nil, fmt.Errorf("socket activation: %w", err)
		}
		var tcp net.Listener
		for _, l := range lns {
			if l != nil {
				tcp = l
				break
			}
		}
		if tcp == nil {
			return nil, nil, fmt.Errorf("socket activation: no stream socket passed (check vaultd.socket ListenStream=)")
		}
		var udp net.PacketConn
		if http3 {
			for _, pc := range pcs {
				if pc != nil {
					udp = pc
					break
				}
			}
		}
		return tcp, udp, nil
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if !http3 {
		return tcp, nil, nil
	}
	ta := tcp.Addr().(*net.TCPAddr)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone})
	if err != nil {
		tcp.Close()
		return nil, nil, fmt.Errorf("listen udp %s (HTTP/3): %w", addr, err)
	}
	return tcp, udp, nil
}

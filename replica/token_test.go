package replica

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func signer(t testing.TB, key string) *Signer {
	t.Helper()
	s, err := NewSigner([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenRoundTrip(t *testing.T) {
	s := signer(t, "0123456789abcdef-secret")
	tok := Token{}.Add(3, 0x16_B374D848).Add(0, 7).Add(3, 5) // 5 < existing: kept at the larger
	text := s.Encode(tok)
	if strings.ContainsAny(text, "+/=") {
		t.Fatalf("token %q is not URL-safe", text)
	}
	got, err := s.Decode(text)
	if err != nil {
		t.Fatal(err)
	}
	if got.For(3) != 0x16_B374D848 || got.For(0) != 7 || got.For(9) != 0 {
		t.Fatalf("decoded %v", got.Positions())
	}
	if z, err := s.Decode(""); err != nil || !z.IsZero() {
		t.Fatalf("empty token: %v, %v", z, err)
	}
}

func TestTokenMergeKeepsMaximum(t *testing.T) {
	a := Token{}.Add(1, 10).Add(2, 50)
	b := Token{}.Add(2, 40).Add(3, 5)
	m := a.Merge(b)
	if m.For(1) != 10 || m.For(2) != 50 || m.For(3) != 5 {
		t.Fatalf("merge = %v", m.Positions())
	}
	if a.For(3) != 0 {
		t.Fatal("Merge changed its receiver")
	}
}

func TestTokenBoundedShards(t *testing.T) {
	var tok Token
	for i := range MaxTokenShards + 10 {
		tok = tok.Add(uint32(i), LSN(1000+i))
	}
	if n := len(tok.Positions()); n != MaxTokenShards {
		t.Fatalf("token holds %d shards, want %d", n, MaxTokenShards)
	}
	// The smallest positions were dropped.
	if tok.For(0) != 0 || tok.For(MaxTokenShards+9) == 0 {
		t.Fatalf("wrong shards dropped: %v", tok.Positions()[:3])
	}
	s := signer(t, "0123456789abcdef")
	if _, err := s.Decode(s.Encode(tok)); err != nil {
		t.Fatalf("a full token does not decode: %v", err)
	}
}

func TestTamperedAndForeignTokensRejected(t *testing.T) {
	s := signer(t, "0123456789abcdef-ours")
	other := signer(t, "0123456789abcdef-theirs")
	text := s.Encode(Token{}.Add(1, 1000))
	raw := []byte(text)
	for i := range raw {
		mut := []byte(text)
		mut[i] ^= 0x01
		if string(mut) == text {
			continue
		}
		if _, err := s.Decode(string(mut)); !errors.Is(err, ErrBadToken) {
			t.Fatalf("flipping byte %d of %q: %v, want ErrBadToken", i, text, err)
		}
	}
	if _, err := s.Decode(other.Encode(Token{}.Add(1, 1000))); !errors.Is(err, ErrBadToken) {
		t.Fatalf("foreign token: %v, want ErrBadToken", err)
	}
	for _, bad := range []string{"!!!", "AA", strings.Repeat("A", MaxTokenLen+1)} {
		if _, err := s.Decode(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("Decode(%.20q): %v, want ErrBadToken", bad, err)
		}
	}
	if _, err := NewSigner([]byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

func FuzzTokenDecode(f *testing.F) {
	s := signer(f, "0123456789abcdef-fuzz")
	f.Add(s.Encode(Token{}.Add(1, 2).Add(7, 1<<40)))
	f.Add("")
	f.Add("AQA")
	f.Add(strings.Repeat("A", 40))
	f.Fuzz(func(t *testing.T, text string) {
		tok, err := s.Decode(text)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error %v is not ErrBadToken", err)
			}
			return
		}
		// Whatever decodes must re-encode to a token that decodes to the same positions.
		again, err := s.Decode(s.Encode(tok))
		if err != nil || fmt.Sprint(again.Positions()) != fmt.Sprint(tok.Positions()) {
			t.Fatalf("re-encoding changed the token: %v -> %v (%v)", tok.Positions(), again.Positions(), err)
		}
	})
}

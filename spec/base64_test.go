package spec

import "testing"

// TestUnpaddedBase64 uses the examples of appendices §"Unpadded Base64".
func TestUnpaddedBase64(t *testing.T) {
	tests := []struct{ plain, encoded string }{
		{"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"},
		{"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
	}
	for _, tc := range tests {
		if got := EncodeBase64([]byte(tc.plain)); got != tc.encoded {
			t.Errorf("EncodeBase64(%q) = %q, want %q", tc.plain, got, tc.encoded)
		}
		got, err := DecodeBase64(tc.encoded)
		if err != nil || string(got) != tc.plain {
			t.Errorf("DecodeBase64(%q) = %q, %v", tc.encoded, got, err)
		}
	}
}

func TestDecodeBase64Variants(t *testing.T) {
	tests := []struct {
		in      string
		url     bool
		want    string
		wantErr bool
	}{
		{in: "Zg==", want: "f"},
		{in: "Zm8=", want: "fo"},
		{in: "Zg=", wantErr: true},
		{in: "Z===", wantErr: true},
		{in: "Zm=8", wantErr: true},
		{in: "-_8", url: true, want: "\xfb\xff"},
		{in: "+/8", want: "\xfb\xff"},
		{in: "+/8", url: true, wantErr: true},
		{in: "-_8=", url: true, want: "\xfb\xff"},
	}
	for _, tc := range tests {
		decode := DecodeBase64
		if tc.url {
			decode = DecodeBase64URL
		}
		got, err := decode(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && string(got) != tc.want) {
			t.Errorf("decode(%q, url=%v) = %q, %v", tc.in, tc.url, got, err)
		}
	}
	if got := EncodeBase64URL([]byte("\xfb\xff")); got != "-_8" {
		t.Errorf("EncodeBase64URL = %q", got)
	}
}
